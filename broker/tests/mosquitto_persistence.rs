//! The test Mosquitto keeps what it acknowledged across a graceful restart,
//! as the shipped broker does (persistence on): issue #17, where a test
//! broker started as root saved nothing and every restart of the soak lost
//! the aggregator's session and its queued detections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use blastnet_broker::Mosquitto;
use rumqttc::{Client, Connection, Event, MqttOptions, Outgoing, Packet, QoS};

const TOPIC: &str = "persist/t";
const MESSAGES: u32 = 200;

fn client(port: u16, id: &str, clean: bool) -> (Client, Connection) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(5));
    Client::new(o, 2 * MESSAGES as usize)
}

/// Poll until `done` says so (or 10 s pass); every event goes through it.
fn poll_until(conn: &mut Connection, mut done: impl FnMut(&Event) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(ev)) => {
                if done(&ev) {
                    return;
                }
            }
            Ok(Err(e)) => panic!("connection: {e}"),
            Err(_) => {}
        }
    }
    panic!("no end within 10 s");
}

fn disconnect(client: &Client, conn: &mut Connection) {
    client.disconnect().unwrap();
    poll_until(conn, |ev| {
        matches!(ev, Event::Outgoing(Outgoing::Disconnect))
    });
}

#[test]
fn a_restarted_mosquitto_delivers_what_it_queued_for_a_persistent_session() {
    let mut broker = Mosquitto::start_required();
    let port = broker.port();

    // A persistent session subscribed, then away.
    let (sub, mut conn) = client(port, "persist-sub", false);
    sub.subscribe(TOPIC, QoS::AtLeastOnce).unwrap();
    poll_until(&mut conn, |ev| {
        matches!(ev, Event::Incoming(Packet::SubAck(_)))
    });
    disconnect(&sub, &mut conn);

    // Messages the broker acknowledges and queues for it.
    let (publisher, mut conn) = client(port, "persist-pub", true);
    for i in 0..MESSAGES {
        publisher
            .publish(TOPIC, QoS::AtLeastOnce, false, i.to_le_bytes().to_vec())
            .unwrap();
    }
    let mut acked = 0;
    poll_until(&mut conn, |ev| {
        acked += u32::from(matches!(ev, Event::Incoming(Packet::PubAck(_))));
        acked == MESSAGES
    });
    disconnect(&publisher, &mut conn);

    // A graceful restart: the broker saves its state, and loads it again.
    broker.stop();
    assert!(
        broker.dir().join("mosquitto.db").is_file(),
        "no persistence file after a graceful stop; the broker's log: {:?}",
        std::fs::read_to_string(broker.dir().join("mosquitto.log")).ok()
    );
    broker.start_again().unwrap();

    // The session is back, with everything it had queued.
    let (sub, mut conn) = client(port, "persist-sub", false);
    let mut session_present = None;
    let mut got = BTreeSet::new();
    poll_until(&mut conn, |ev| {
        match ev {
            Event::Incoming(Packet::ConnAck(a)) => session_present = Some(a.session_present),
            Event::Incoming(Packet::Publish(p)) => {
                if let Ok(b) = <[u8; 4]>::try_from(&p.payload[..]) {
                    got.insert(u32::from_le_bytes(b));
                }
            }
            _ => {}
        }
        session_present == Some(false) || got.len() == MESSAGES as usize
    });
    assert_eq!(
        session_present,
        Some(true),
        "the session survived the restart"
    );
    assert_eq!(
        got,
        (0..MESSAGES).collect(),
        "every queued message delivered"
    );
    disconnect(&sub, &mut conn);
}
