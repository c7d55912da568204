"""Words of the kiosk screen and the purchaser page in English and Simplified Chinese.

One catalogue per language with the same keys (a test holds them equal). The kiosk screen gets
the catalogue as JSON in its page and switches language without a round trip; the purchaser page
is rendered on the server in the language the phone asks for. Refusals are keyed by the service's
error code (`error.<code>`), so every refusal the API can give has words in both languages, and an
unknown code falls back to the words for its HTTP status.
"""

from __future__ import annotations

from typing import Final

DEFAULT_LANGUAGE: Final = "en"
LANGUAGES: Final = ("en", "zh-Hans")
LANGUAGE_NAMES: Final = {"en": "English", "zh-Hans": "中文"}

_EN: Final[dict[str, str]] = {
    # kiosk: start
    "kiosk.title": "Food locker",
    "kiosk.deliver": "Deliver food",
    "kiosk.deliver_hint": "For couriers",
    "kiosk.collect": "Collect food",
    "kiosk.collect_hint": "Type the 8-digit code from your message",
    "kiosk.scan_hint": "Have a QR code? Hold it under the scanner below the screen.",
    "kiosk.language": "Language",
    "kiosk.back": "Back",
    "kiosk.start_over": "Start over",
    "kiosk.next": "Next",
    "kiosk.open": "Open",
    "kiosk.delete": "Delete",
    "kiosk.clear": "Clear",
    "kiosk.try_again": "Try again",
    "kiosk.done": "Done",
    "kiosk.idle_warning": "Returning to the start in {s} s. Touch the screen to stay.",
    "kiosk.busy": "Opening a compartment…",
    "kiosk.busy_pickup": "Checking your code…",
    "kiosk.paused": "Openings are paused at this site for now. Please ask the staff.",
    "kiosk.offline": "This locker cannot reach its compartments right now. Please try later.",
    # kiosk: setup
    "kiosk.setup_title": "Set up this screen",
    "kiosk.setup_hint": "Enter the kiosk token printed when the kiosk was created.",
    "kiosk.setup_token": "Kiosk token",
    "kiosk.setup_save": "Save",
    # kiosk: courier
    "courier.id_title": "Courier ID",
    "courier.id_hint": "Type your courier ID.",
    "courier.pin_title": "PIN",
    "courier.pin_hint": "Type your PIN.",
    "courier.order_title": "Order reference",
    "courier.order_hint": "Type the order reference, or scan the order label.",
    "courier.opened_title": "Compartment {n} is open",
    "courier.opened_hint": "Put the food in and close the door.",
    # kiosk: pickup
    "pickup.code_title": "Pickup code",
    "pickup.code_hint": "Type the 8-digit code from your message.",
    "pickup.opened_title": "Compartment {n} is open",
    "pickup.opened_hint": "Take your food and close the door. Enjoy your meal!",
    # refusals, by the service's error code
    "error.title": "Sorry",
    "error.generic": "Something went wrong. Please try again.",
    "error.network": "The locker cannot reach its service right now. Please try again shortly.",
    "error.http_400": "That input was not understood. Please check it and try again.",
    "error.http_401": "This screen is not signed in. Please call the operator.",
    "error.http_403": "This action is not allowed here.",
    "error.http_404": "Not found. Please check what you typed.",
    "error.http_409": "That cannot be done right now.",
    "error.http_422": "That input was not understood. Please check it and try again.",
    "error.http_429": "Too many attempts. Please wait a few minutes and try again.",
    "error.http_503": "The locker is not reachable right now. Please try again shortly.",
    "error.http_504": "The locker did not answer in time. Please try again.",
    "error.bad_request": "That input was not understood. Please check it and try again.",
    "error.validation_error": "That input was not understood. Please check it and try again.",
    "error.unprocessable": "That input was not understood. Please check it and try again.",
    "error.malformed_code": "The pickup code has 8 digits. Please check it and try again.",
    "error.unauthorized": "This screen is not signed in. Please call the operator.",
    "error.forbidden": "This action is not allowed here.",
    "error.not_found": "Not found. Please check what you typed.",
    "error.conflict": "That cannot be done right now.",
    "error.too_many_requests": "Too many attempts. Please wait a few minutes and try again.",
    "error.bad_courier_credentials": "Courier ID or PIN is wrong.",
    "error.order_not_found": "No order with this reference is waiting at this locker.",
    "error.ambiguous_order": "Several orders match this reference. Please type the full order ID.",
    "error.invalid_transition": "This order is not waiting for a drop-off.",
    "error.dropoff_in_progress": (
        "This order is being dropped off at {kiosk}, compartment {n}. If the food is in it, "
        "close its door. If not, try again in a few minutes, once it is freed."
    ),
    "error.food_too_old": "This food has too little of its safe time left to go into the "
    "locker. Please take it back to the merchant.",
    "error.no_free_compartment": (
        "No free compartment fits this order right now. Please call the operator."
    ),
    "error.compartment_changed": "The compartment changed meanwhile. Please try again.",
    "error.invalid_code": "This code does not open anything here. Please check it and try again.",
    "error.code_used": "This code has already been used.",
    "error.code_expired": "This code has expired. Please contact the restaurant.",
    "error.not_ready": "Your food is not ready yet. Please wait for the message.",
    "error.compartment_fault": "A fault was reported in this compartment: the food cannot be "
    "collected now. Staff will contact you.",
    "error.food_unsafe": "For food safety this order can no longer be collected: it was not "
    "shown to stay hot enough, or its time ran out. It will be discarded. Please contact the "
    "restaurant.",
    "error.locked_out": "Too many wrong attempts. Please wait a few minutes and try again.",
    "error.kill_switch_engaged": "Openings are paused at this site. Please ask the staff.",
    "error.dropoffs_frozen": (
        "Deliveries are paused at this site. Please keep the food and ask the staff."
    ),
    "error.door_unlocked": (
        "Your compartment is already unlocked: pull its door. "
        "If it has locked again, try once more in a moment."
    ),
    "error.unlock_failed": "The door did not open. Please call the operator.",
    "error.kiosk_unreachable": "The locker is not reachable right now. Please try again shortly.",
    "error.kiosk_link_down": "The locker is not reachable right now. Please try again shortly.",
    "error.kiosk_link_error": "The locker is not reachable right now. Please try again shortly.",
    "error.unavailable": "The locker is not reachable right now. Please try again shortly.",
    "error.kiosk_command_timeout": "The locker did not answer in time. Please try again.",
    "error.dropoff_unconfirmed": (
        "The locker did not confirm that compartment {n} opened. If it is open, put the food in "
        "and close the door. If it is not, touch Try again: the same compartment opens."
    ),
    "error.dropoff_empty": (
        "Nothing was put in compartment {n}, so the order was not dropped off. To drop it off, "
        "touch Try again and type your PIN: a compartment opens again."
    ),
    "error.order_changed": "The order changed meanwhile. Please try again.",
    "error.no_answer_in_time": "The locker did not answer in time. Please try again.",
    "error.invalid_kiosk_command": "Something went wrong. Please call the operator.",
    # purchaser page
    "purchaser.title": "Your food order",
    "purchaser.show_qr": "Hold this QR code under the locker's scanner",
    "purchaser.qr_alt": "QR code that opens your compartment",
    "purchaser.or_code": "Or type this code on the locker's screen",
    "purchaser.site": "Where",
    "purchaser.kiosk": "Locker",
    "purchaser.compartment": "Compartment",
    "purchaser.status": "Status",
    "purchaser.deadline": "Collect by",
    "purchaser.order_ref": "Order",
    "purchaser.updated": "This page updates by itself.",
    "purchaser.not_found_title": "Order not found",
    "purchaser.not_found": "This link is not valid. Please check the message you received.",
    "status.created": "Order received, waiting for the courier",
    "status.assigned": "The courier is at the locker",
    "status.deposited": "Your food is in the locker",
    "status.disinfecting": "Your food is in the locker, being kept hot while the compartment "
    "is disinfected",
    "status.minutes_left": "About {m} min left",
    "status.kept": "Kept at about {c} °C, never below {low} °C, for {m} minutes since it arrived",
    "purchaser.trace": "Your food's temperature since it arrived; the dashed line is the "
    "food-safety floor",
    "status.ready": "Ready for pickup",
    "status.picked_up": "Collected. Enjoy your meal!",
    "status.expired": "Your order expired: it was not collected in time and will be "
    "discarded. Please contact the merchant.",
    "status.expired_never_dropped_off": "Your order expired: it was never dropped off at the "
    "locker. Please contact the merchant.",
    "status.food_unsafe": "For food safety your order can no longer be collected: it was not "
    "shown to stay hot enough, or its time ran out. It will be discarded. Please contact the "
    "merchant.",
    "status.fault": "A fault occurred in your compartment. Staff will contact you.",
    "status.discarded": "Staff took your order out of the locker and discarded it: it cannot "
    "be collected. Please contact the merchant.",
    "status.taken_out": "Staff took your order out of the locker: it cannot be collected there. "
    "Please contact the merchant.",
    "status.lock_jammed": "The compartment's lock did not open. Staff will contact you.",
    "status.kiosk_offline": "The locker is offline for the moment; your food is still inside. "
    "If it was ready before, scanning your QR code at the locker can still open your compartment.",
    # The same, where offline pickups are switched off (LOCKER_OFFLINE_SUPPLY_REFRESH_S=0).
    "status.kiosk_offline_closed": "The locker is offline for the moment; your food is still "
    "inside. It can be collected once the locker is back online.",
    "status.cancelled": "Cancelled",
    "status.failed": "The delivery could not be completed",
}

_ZH: Final[dict[str, str]] = {
    "kiosk.title": "智能取餐柜",
    "kiosk.deliver": "存餐",
    "kiosk.deliver_hint": "骑手专用",
    "kiosk.collect": "取餐",
    "kiosk.collect_hint": "输入消息中的 8 位取餐码",
    "kiosk.scan_hint": "有二维码？请将二维码对准屏幕下方的扫码口。",
    "kiosk.language": "语言",
    "kiosk.back": "返回",
    "kiosk.start_over": "重新开始",
    "kiosk.next": "下一步",
    "kiosk.open": "开柜",
    "kiosk.delete": "删除",
    "kiosk.clear": "清空",
    "kiosk.try_again": "重试",
    "kiosk.done": "完成",
    "kiosk.idle_warning": "{s} 秒后返回首页，触摸屏幕可继续操作。",
    "kiosk.busy": "正在打开柜门…",
    "kiosk.busy_pickup": "正在核验取餐码…",
    "kiosk.paused": "本站点暂停开柜，请联系现场工作人员。",
    "kiosk.offline": "取餐柜暂时无法控制柜格，请稍后再试。",
    "kiosk.setup_title": "设置本屏幕",
    "kiosk.setup_hint": "请输入创建柜机时打印的柜机令牌。",
    "kiosk.setup_token": "柜机令牌",
    "kiosk.setup_save": "保存",
    "courier.id_title": "骑手编号",
    "courier.id_hint": "请输入骑手编号。",
    "courier.pin_title": "密码",
    "courier.pin_hint": "请输入密码。",
    "courier.order_title": "订单号",
    "courier.order_hint": "请输入订单号，或扫描订单标签。",
    "courier.opened_title": "{n} 号柜门已打开",
    "courier.opened_hint": "请放入餐品并关好柜门。",
    "pickup.code_title": "取餐码",
    "pickup.code_hint": "请输入消息中的 8 位取餐码。",
    "pickup.opened_title": "{n} 号柜门已打开",
    "pickup.opened_hint": "请取出餐品并关好柜门。祝您用餐愉快！",
    "error.title": "抱歉",
    "error.generic": "出现问题，请重试。",
    "error.network": "取餐柜暂时无法连接服务，请稍后重试。",
    "error.http_400": "输入内容无法识别，请检查后重试。",
    "error.http_401": "本屏幕未登录，请联系运营人员。",
    "error.http_403": "此处不允许该操作。",
    "error.http_404": "未找到，请检查输入内容。",
    "error.http_409": "当前无法执行该操作。",
    "error.http_422": "输入内容无法识别，请检查后重试。",
    "error.http_429": "尝试次数过多，请几分钟后再试。",
    "error.http_503": "取餐柜暂时无法连接，请稍后重试。",
    "error.http_504": "取餐柜未及时响应，请重试。",
    "error.bad_request": "输入内容无法识别，请检查后重试。",
    "error.validation_error": "输入内容无法识别，请检查后重试。",
    "error.unprocessable": "输入内容无法识别，请检查后重试。",
    "error.malformed_code": "取餐码为 8 位数字，请检查后重试。",
    "error.unauthorized": "本屏幕未登录，请联系运营人员。",
    "error.forbidden": "此处不允许该操作。",
    "error.not_found": "未找到，请检查输入内容。",
    "error.conflict": "当前无法执行该操作。",
    "error.too_many_requests": "尝试次数过多，请几分钟后再试。",
    "error.bad_courier_credentials": "骑手编号或密码错误。",
    "error.order_not_found": "本柜没有待存入的该订单。",
    "error.ambiguous_order": "多个订单与该订单号匹配，请输入完整的订单编号。",
    "error.invalid_transition": "该订单当前不需要存餐。",
    "error.dropoff_in_progress": (
        "该订单正在{kiosk}的 {n} 号格口存入。如果餐品已放入，请关好该格口的柜门；"
        "如果没有，请几分钟后格口释放时再试。"
    ),
    "error.food_too_old": ("该餐品剩余的安全时间不足，不能存入取餐柜。请将餐品带回商家。"),
    "error.no_free_compartment": "暂无适合该订单的空柜格，请联系运营人员。",
    "error.compartment_changed": "柜格状态已变化，请重试。",
    "error.invalid_code": "该取餐码无法在此开柜，请检查后重试。",
    "error.code_used": "该取餐码已使用过。",
    "error.code_expired": "取餐码已过期，请联系商家。",
    "error.not_ready": "餐品尚未就绪，请等待取餐通知。",
    "error.compartment_fault": "该柜格报告了故障，餐品暂时无法取出。工作人员会与您联系。",
    "error.food_unsafe": "出于食品安全，此订单已无法取餐：无法确认餐品一直保持足够温度，"
    "或已超出安全时限，将被丢弃。请联系商家。",
    "error.locked_out": "错误次数过多，请几分钟后再试。",
    "error.kill_switch_engaged": "本站点已暂停开柜，请联系现场工作人员。",
    "error.dropoffs_frozen": "本站点已暂停存餐，请保管好餐品并联系现场工作人员。",
    "error.door_unlocked": "您的柜门已解锁，请直接拉开。如已重新上锁，请稍后再试一次。",
    "error.unlock_failed": "柜门未能打开，请联系运营人员。",
    "error.kiosk_unreachable": "取餐柜暂时无法连接，请稍后重试。",
    "error.kiosk_link_down": "取餐柜暂时无法连接，请稍后重试。",
    "error.kiosk_link_error": "取餐柜暂时无法连接，请稍后重试。",
    "error.unavailable": "取餐柜暂时无法连接，请稍后重试。",
    "error.kiosk_command_timeout": "取餐柜未及时响应，请重试。",
    "error.dropoff_unconfirmed": (
        "取餐柜未确认 {n} 号格口已打开。如果柜门已打开，请放入餐品并关好柜门；"
        "如果没有打开，请点击“重试”，将再次打开同一格口。"
    ),
    "error.dropoff_empty": (
        "{n} 号格口内没有放入任何物品，订单未存入。如需存入，请点击“重试”并输入您的密码，"
        "将再次打开格口。"
    ),
    "error.order_changed": "订单刚刚发生了变化，请重试。",
    "error.no_answer_in_time": "取餐柜未及时响应，请重试。",
    "error.invalid_kiosk_command": "出现问题，请联系运营人员。",
    "purchaser.title": "您的外卖订单",
    "purchaser.show_qr": "请将此二维码对准取餐柜的扫码口",
    "purchaser.qr_alt": "打开您的柜格的二维码",
    "purchaser.or_code": "或在取餐柜屏幕上输入此取餐码",
    "purchaser.site": "地点",
    "purchaser.kiosk": "取餐柜",
    "purchaser.compartment": "柜格",
    "purchaser.status": "状态",
    "purchaser.deadline": "请在此时间前取餐",
    "purchaser.order_ref": "订单",
    "purchaser.updated": "本页面会自动更新。",
    "purchaser.not_found_title": "未找到订单",
    "purchaser.not_found": "该链接无效，请检查您收到的消息。",
    "status.created": "已接单，等待骑手送达",
    "status.assigned": "骑手正在存餐",
    "status.deposited": "餐品已存入取餐柜",
    "status.disinfecting": "餐品已存入取餐柜，正在保温并对柜格消毒",
    "status.minutes_left": "约剩 {m} 分钟",
    "status.kept": "送达后已保温 {m} 分钟，约 {c} °C，最低 {low} °C",
    "purchaser.trace": "餐品送达后的温度；虚线为食品安全温度下限",
    "status.ready": "可以取餐",
    "status.picked_up": "已取餐，祝您用餐愉快！",
    "status.expired": "订单已过期：未在规定时间内取餐，餐品将被丢弃。请联系商家。",
    "status.expired_never_dropped_off": "订单已过期：餐品未送达取餐柜。请联系商家。",
    "status.food_unsafe": "出于食品安全，您的订单已无法取餐：无法确认餐品一直保持足够温度，或已超出"
    "安全时限，将被丢弃。请联系商家。",
    "status.fault": "您的柜格出现故障，工作人员会与您联系。",
    "status.discarded": "工作人员已将您的订单从取餐柜取出并丢弃，无法再取餐。请联系商家。",
    "status.taken_out": "工作人员已将您的订单从取餐柜取出，无法在柜中取餐。请联系商家。",
    "status.lock_jammed": "柜门锁未能打开，工作人员会与您联系。",
    "status.kiosk_offline": "取餐柜暂时离线，您的餐品仍在柜内。"
    "如果餐品此前已就绪，在取餐柜扫描您的二维码仍可打开柜格。",
    "status.kiosk_offline_closed": "取餐柜暂时离线，您的餐品仍在柜内。取餐柜恢复在线后即可取餐。",
    "status.cancelled": "已取消",
    "status.failed": "配送未能完成",
}

CATALOGUES: Final[dict[str, dict[str, str]]] = {"en": _EN, "zh-Hans": _ZH}


def catalogue(language: str) -> dict[str, str]:
    return CATALOGUES.get(language, CATALOGUES[DEFAULT_LANGUAGE])


def pick_language(requested: str | None, accept_language: str | None) -> str:
    """`?lang=` when it names a language we have, else the browser's first Chinese or English."""
    if requested in CATALOGUES:
        return requested
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-Hans"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE


def translate(language: str, key: str, **values: object) -> str:
    text = catalogue(language).get(key) or _EN.get(key) or key
    return text.format(**values) if values else text
