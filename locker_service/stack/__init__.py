"""Running the whole locker system on one machine: the `lockerctl up` supervisor, the embedded MQTT
broker, demo data, and the `lockerctl demo-order` command."""
