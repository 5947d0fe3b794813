//! What users and peers type as MQTT names: a broker URL that parses prints
//! back to a URL that parses to the same; a topic that parses is rebuilt by
//! the topic formatters to the same string; anything else is an error that
//! says what was expected. Never a panic.
#![no_main]

use blastnet_contract::broker::BrokerUrl;
use blastnet_contract::topic::{self, Topic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match BrokerUrl::parse(text) {
        Ok(b) => assert_eq!(BrokerUrl::parse(&b.to_string()).as_ref(), Ok(&b)),
        Err(e) => assert!(e.to_string().contains("expected")),
    }
    // The first line is the prefix, the rest the topic.
    let (prefix, t) = text.split_once('\n').unwrap_or(("blastnet", text));
    match topic::parse(prefix, t) {
        Ok(Topic::Node(n)) => assert_eq!(topic::node(prefix, n.site, n.node, n.kind), t),
        Ok(Topic::Event { site }) => assert_eq!(topic::event(prefix, site), t),
        Err(_) => {}
    }
});
