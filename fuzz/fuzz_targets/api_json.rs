//! The control APIs' JSON bodies as anyone may send them: read strictly
//! into the contract's types, never a panic; what reads writes back as
//! JSON that reads the same.

#![no_main]

use cutover_control_api::contract::{RrsetChange, ServiceChange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(change) = serde_json::from_slice::<RrsetChange>(body) {
        let again: RrsetChange =
            serde_json::from_str(&serde_json::to_string(&change).expect("writes")).expect("reads");
        assert_eq!(again, change);
    }
    if let Ok(change) = serde_json::from_slice::<ServiceChange>(body) {
        let again: ServiceChange =
            serde_json::from_str(&serde_json::to_string(&change).expect("writes")).expect("reads");
        assert_eq!(again, change);
    }
});
