//! Arbitrary bytes as a SOPS document of each format: parsing and, when it succeeds, decrypting
//! with a fixed data key, flattening and JSON output must return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_relay::sops::{Document, Format};

/// The data key of no real document: decryption reaches the AES-GCM check and fails there
/// (or succeeds for documents without encrypted values), exercising the walk and the MAC.
const KEY: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    for format in [Format::Yaml, Format::Json, Format::Dotenv, Format::Binary] {
        let Ok(doc) = Document::parse(data, format) else {
            continue;
        };
        let _ = doc.key_groups();
        let _ = doc.key_kinds();
        if let Ok(decrypted) = doc.decrypt(&KEY) {
            let _ = decrypted.flatten();
            let _ = decrypted.to_json();
        }
    }
});
