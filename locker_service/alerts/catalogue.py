"""What each kind of alert is called, in English and Simplified Chinese: one place for every kind.

The code raises alerts by a short kind (`door_opened_unexplained`); people read a title ("Door
opened without a command") and a line saying what to do. The dashboard, the on-call messages and
the daily digest all take their words from here. A test finds every kind raised in the code and
holds it to an entry in both languages, so a new kind cannot reach a person as a raw code.

Durations are told in nominal story time: a real interval times LOCKER_TIME_SCALE, so "open for
5 min" is true of the story even when a demo runs it 60 times faster. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

# A purchaser message given up on (raised by the notification worker, read by the digest and
# the purchaser-data erase).
UNDELIVERABLE_ALERT = "notification_undeliverable"
# A UV-C lamp near the end of its rated life (raised by a cycle's proof, kiosks/
# disinfection_proof.py; resolved when an operator records a new lamp).
LAMP_LIFE_ALERT = "uv_lamp_life"

LANGUAGES: Final = ("en", "zh-Hans")


@dataclass(frozen=True, slots=True)
class Words:
    title: str
    advice: str


# kind -> language -> words. Keep the kinds sorted; add both languages at once.
CATALOGUE: Final[dict[str, dict[str, Words]]] = {
    "above_ceiling": {
        "en": Words("Compartment too hot", "Check the heater and the food; the board cuts the "
                    "heater at its own limit."),
        "zh-Hans": Words("隔间温度过高", "请检查加热器和食物；控制板会在自身上限时切断加热。"),
    },
    "below_floor": {
        "en": Words("Food below the safe temperature", "Check the heater. Food held below the "
                    "floor too long must be thrown away."),
        "zh-Hans": Words("食物低于安全温度", "请检查加热器。低于安全温度过久的食物必须丢弃。"),
    },
    "board_offline": {
        "en": Words("Locker board not answering", "Check the board's power and the RS-485 cable "
                    "at the kiosk."),
        "zh-Hans": Words("柜体控制板无响应", "请检查柜机的控制板电源和 RS-485 线缆。"),
    },
    "board_rebooted": {
        "en": Words("Locker board restarted", "No action needed unless it happens again."),
        "zh-Hans": Words("柜体控制板已重启", "如未再次发生，无需处理。"),
    },
    "compartment_fault": {
        "en": Words("Compartment fault", "The compartment reported a fault: inspect it and take "
                    "it out of service if needed."),
        "zh-Hans": Words("隔间故障", "隔间报告了故障：请检查，必要时停用该隔间。"),
    },
    "courier_locked_out": {
        "en": Words("A courier is locked out", "His logins wait after too many wrong PINs. Call "
                    "him: if it is him, lift the lockout from this alert; if not, someone is "
                    "trying his PIN."),
        "zh-Hans": Words("配送员已被锁定", "PIN 错误次数过多，登录需等待。请联系他：如确是本人，"
                         "请在此警报中解除锁定；如不是，说明有人在试他的 PIN。"),
    },
    "cycle_aborted": {
        "en": Words("Disinfection cycle aborted", "The compartment was not disinfected: run a "
                    "cleaning before it is used again."),
        "zh-Hans": Words("消毒周期中止", "隔间未完成消毒：再次使用前请进行清洁。"),
    },
    "cycle_not_started": {
        "en": Words("Disinfection cycle could not start", "The compartment holds food but its "
                    "cycle did not start (a fault or the board refused it): abort the cycle and "
                    "open, or discard the food."),
        "zh-Hans": Words("消毒周期无法启动", "隔间内有食物但消毒周期未能启动（故障或控制板拒绝）："
                         "请中止周期并开门，或丢弃食物。"),
    },
    "cycle_overdue": {
        "en": Words("Disinfection cycle overdue", "The kiosk did not report the cycle done: "
                    "check the UV lamp and the kiosk."),
        "zh-Hans": Words("消毒周期超时", "柜机未报告消毒完成：请检查紫外灯和柜机。"),
    },
    "cycle_report_impossible": {
        "en": Words("Disinfection record cannot be true", "The board's lamp record of the "
                    "cycle contradicts itself or the cycle commanded: the cycle runs again. "
                    "Check the kiosk's board and its bridge."),
        "zh-Hans": Words("消毒记录不可信", "控制板的紫外灯记录自相矛盾或与下发的周期不符："
                         "周期将重新运行。请检查柜机的控制板和桥接程序。"),
    },
    "cycle_short_dose": {
        "en": Words("Disinfection short of its UV dose", "The UV-C lamp went dark during the "
                    "cycle: the cycle runs again. Check the lamp; replace it if it happens "
                    "again."),
        "zh-Hans": Words("消毒紫外剂量不足", "消毒周期中紫外灯熄灭：周期将重新运行。"
                         "请检查紫外灯；若再次发生请更换。"),
    },
    "door_left_open": {
        "en": Words("Door left open", "Close the door. At a drop-off, check the food is "
                    "inside; the compartment's cycle waits until the door is shut."),
        "zh-Hans": Words("柜门未关", "请关好柜门。投递时请确认食物已放入；"
                         "柜门关好后柜格才会开始消毒。"),
    },
    "door_opened_unexplained": {
        "en": Words("Door opened without a command", "Nobody asked for this opening: check the "
                    "compartment and the lock."),
        "zh-Hans": Words("柜门在无指令时被打开", "没有人请求开门：请检查隔间和门锁。"),
    },
    "expired_food": {
        "en": Words("Expired food to remove", "The order's hold is over: remove the food and "
                    "throw it away."),
        "zh-Hans": Words("需取出过期食物", "订单的保留时间已结束：请取出并丢弃食物。"),
    },
    "food_unsafe": {
        "en": Words("Unsafe food to discard", "The food broke its site's food-safety rules "
                    "(kept below the floor, no temperature, or out of time): open the "
                    "compartment with the reason 'discard' and throw the food away."),
        "zh-Hans": Words("需丢弃不安全的食物", "餐品违反了站点的食品安全规则（温度低于下限、"
                         "无温度读数或超出时限）：请以“丢弃”为原因打开隔间并丢弃餐品。"),
    },
    "impossible_report": {
        "en": Words("Kiosk report contradicts the board", "A kiosk reported something the "
                    "board's sensors or the cycle's clock rule out; nothing was changed. Check "
                    "the compartment and the kiosk's account."),
        "zh-Hans": Words("柜机报告与控制板不符", "柜机报告的情况与控制板传感器或消毒计时不符，"
                         "系统未做任何更改。请检查隔间和柜机账户。"),
    },
    "item_in_free_compartment": {
        "en": Words("Something left in a free compartment", "Remove what is inside before the "
                    "compartment is used again."),
        "zh-Hans": Words("空闲隔间内有物品", "再次使用前请取出隔间内的物品。"),
    },
    "kill_switch": {
        "en": Words("Kill switch engaged", "Every code and remote opening at the site is frozen "
                    "until the switch is released."),
        "zh-Hans": Words("紧急停用已启用", "在解除之前，该站点所有取件码和远程开门均被冻结。"),
    },
    "kill_switch_all": {
        "en": Words("Every site frozen", "An admin froze openings and drop-offs at every site; "
                    "release it when the cause is dealt with."),
        "zh-Hans": Words("所有站点已冻结", "管理员已冻结所有站点的开柜和存餐；问题处理后请解除。"),
    },
    "kiosk_clock_off": {
        "en": Words("Kiosk clock wrong", "Set the kiosk PC's time service (NTP). Until then its "
                    "times are not to be trusted and commands to it may wait longer."),
        "zh-Hans": Words("柜机时钟不准", "请设置柜机电脑的时间同步（NTP）。在此之前，其上报的时间"
                         "不可信，发往柜机的指令可能需要更长等待。"),
    },
    "kiosk_offline": {
        "en": Words("Kiosk offline", "Check the kiosk PC's power and network. While its PC "
                    "runs, purchasers of ready orders can still open with their QR codes."),
        "zh-Hans": Words("柜机离线", "请检查柜机电脑的电源和网络。柜机电脑运行期间，"
                         "已就绪订单的取餐人仍可扫描二维码开柜。"),
    },
    "kiosk_under_attack": {
        "en": Words("Codes being guessed at a kiosk", "Many wrong pickup codes were typed; typed "
                    "codes are slowed down. Check the kiosk's camera or send someone."),
        "zh-Hans": Words("柜机疑遭猜码", "输入了大量错误取餐码，手动输入已被限速。"
                         "请查看监控或派人到场。"),
    },
    "no_free_compartment": {
        "en": Words("A courier found no free compartment", "A courier was turned away with the "
                    "food: free a compartment (empty expired food, check out-of-service ones) or "
                    "send couriers to another kiosk."),
        "zh-Hans": Words("配送员找不到空柜格", "配送员带着餐品被拒：请腾出柜格（清理过期餐品、"
                         "检查停用的柜格），或让配送员前往其他柜机。"),
    },
    "notification_undeliverable": {
        "en": Words("Purchaser not reached", "Her message could not be delivered: correct the "
                    "contact and resend it from the alert."),
        "zh-Hans": Words("未能联系到购买者", "消息无法送达：请更正联系方式，并从此警报重新发送。"),
    },
    "offline_pickup_conflict": {
        "en": Words("Offline pickup in conflict", "While cut off from the service the kiosk "
                    "opened a compartment for an order that had meanwhile been cancelled, "
                    "expired, opened remotely or collected. Check the compartment and call the "
                    "purchaser; the order was not changed."),
        "zh-Hans": Words("离线取餐冲突", "柜机在与服务断开期间为一个订单开了门，而该订单在此期间"
                         "已被取消、过期、远程开门或已取走。请检查隔间并联系取餐人；订单未被更改。"),
    },
    "order_never_dropped_off": {
        "en": Words("Order never dropped off", "The order expired before a courier brought it; "
                    "the purchaser and the merchant were told."),
        "zh-Hans": Words("订单未被投递", "订单在骑手送达前已过期；已通知取餐人和商家。"),
    },
    "order_not_supplied_offline": {
        "en": Words("Order cannot be picked up while the kiosk is offline", "Its stored pickup "
                    "details could not be sent to the kiosk, so the kiosk cannot check her code "
                    "while cut off from the service. Her typed code works while the kiosk is in "
                    "touch with the service. If she is stuck while it is cut off, it can open "
                    "for her once it is back (her code, or a remote open from the dashboard). "
                    "Have the order's record checked."),
        "zh-Hans": Words("柜机离线时无法取此订单", "该订单保存的取餐信息无法发送到柜机，柜机与服务"
                         "断开时无法核验她的取餐码。柜机与服务连通时她输入的取餐码仍可使用。如柜机断开"
                         "期间她无法取餐，待柜机恢复在线后即可开门（输入取餐码，或在控制台远程"
                         "开门）。请核查该订单的记录。"),
    },
    "removed_during_hold": {
        "en": Words("Food removed before it was ready", "Someone opened the compartment during "
                    "the hold: check the order."),
        "zh-Hans": Words("食物在就绪前被取出", "保温期间有人打开了隔间：请核查订单。"),
    },
    "snapshot_unexplained": {
        "en": Words("Compartment state unexplained", "The board shows a compartment the "
                    "service's records cannot explain; nothing was changed. Inspect it."),
        "zh-Hans": Words("隔间状态无法解释", "控制板显示的隔间状态与系统记录不符，"
                         "系统未做更改。请检查该隔间。"),
    },
    "taken_out_on_inspection": {
        "en": Words("Food taken out during an inspection", "Staff opened the compartment to "
                    "look in, which leaves the food in, and took it out: find out where it "
                    "went."),
        "zh-Hans": Words("检查时食物被取出", "工作人员打开隔间进行检查（食物应留在柜内），却取出了"
                         "食物：请查明食物去向。"),
    },
    "timer_failed": {
        "en": Words("A scheduled step did not happen", "A step of the story gave up after many "
                    "tries: look at the order or compartment."),
        "zh-Hans": Words("计划步骤未执行", "流程中的某一步多次重试后放弃：请查看订单或隔间。"),
    },
    "uv_lamp_life": {
        "en": Words("UV-C lamp near the end of its life", "Replace the lamp, then record the "
                    "replacement so its hours start again."),
        "zh-Hans": Words("紫外灯接近使用寿命", "请更换紫外灯，并登记更换，使其计时重新开始。"),
    },
    "webhook_dead": {
        "en": Words("A merchant did not hear an order event", "Their webhook endpoint failed "
                    "every attempt for about ten hours. Call the merchant: once their endpoint "
                    "answers, they send the event again from their dead letters."),
        "zh-Hans": Words("商家未收到订单事件", "商家的 Webhook 地址在约十小时内每次投递都失败。"
                         "请联系商家：其地址恢复后，可从死信列表重新发送该事件。"),
    },
}  # fmt: skip

_COUNT: Final = {"en": "{n} times", "zh-Hans": "{n} 次"}
_FOR: Final = {"en": "for {d}", "zh-Hans": "已持续 {d}"}
_UNITS: Final = {"en": ("d", "h", "min"), "zh-Hans": ("天", "小时", "分钟")}


def words(kind: str, language: str = "en") -> Words:
    """The words for `kind`; a kind missing here (a test forbids it) reads as its code."""
    entry = CATALOGUE.get(kind, {})
    found = entry.get(language) or entry.get("en")
    if found is not None:
        return found
    return Words(kind.replace("_", " ").capitalize(), "")


def titles(kind: str) -> dict[str, str]:
    return {language: words(kind, language).title for language in LANGUAGES}


def advice(kind: str) -> dict[str, str]:
    return {language: words(kind, language).advice for language in LANGUAGES}


def nominal_s(real_s: float, time_scale: float) -> float:
    """A real interval as story time: under LOCKER_TIME_SCALE=60 a real second is a minute."""
    return real_s * time_scale


def duration(seconds: float, language: str = "en") -> str:
    """`2 h 5 min`, `12 min`, `< 1 min`: what an operator reads at a glance."""
    day, hour, minute = _UNITS.get(language, _UNITS["en"])
    minutes = int(max(seconds, 0) // 60)
    if minutes < 1:
        return f"< 1 {minute}"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} {day}" if days else "", f"{hours} {hour}" if hours else ""]
    parts.append(f"{minutes} {minute}" if minutes or not (days or hours) else "")
    return " ".join(part for part in parts if part)


def summary(
    kind: str,
    count: int,
    raised_at: datetime,
    now: datetime,
    time_scale: float,
    language: str = "en",
) -> str:
    """`Door opened without a command · 255 times · for 12 min` (story time)."""
    parts = [words(kind, language).title]
    if count > 1:
        parts.append(_COUNT.get(language, _COUNT["en"]).format(n=count))
    open_s = nominal_s((now - raised_at).total_seconds(), time_scale)
    parts.append(_FOR.get(language, _FOR["en"]).format(d=duration(open_s, language)))
    return " · ".join(parts)
