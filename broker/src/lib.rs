//! Embedded MQTT broker (rumqttd) and a Mosquitto process for tests and replay.
