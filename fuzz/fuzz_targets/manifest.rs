//! Any text must parse into a valid manifest or a ManifestError naming a field; never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match blastnet_contract::Manifest::from_json(text, "fuzz.json") {
            Ok(m) => {
                // A manifest that validated must serialise and parse back to itself.
                let again = blastnet_contract::Manifest::from_json(&m.to_json_pretty(), "again.json")
                    .expect("a valid manifest round-trips");
                assert_eq!(again, m);
            }
            Err(e) => assert!(e.to_string().starts_with("fuzz.json: field `")),
        }
    }
});
