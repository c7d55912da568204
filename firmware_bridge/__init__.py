"""The kiosk bridge: the locker bank board and the code scanner on serial ports, the locker
service over MQTT. One process per kiosk, on the kiosk's controller PC.

Layers, bottom up: `transport` (serial ports), `board` (requests to the board, using the frame
codec of `hardware.protocol`), `tracker` (STATUS answers to events and snapshots, pure),
`store` (the on-disk outbox, request cache and board memory), `mqtt` (the broker side),
`bridge` (the supervisor wiring them), `config` (BRIDGE_ settings). `contract` is the
published MQTT contract (topics, payload models, client setup): the one part the service
imports. Run it with `lockerctl bridge`.
"""
