//! Field node runtime: sources, clock, spool, MQTT publisher
