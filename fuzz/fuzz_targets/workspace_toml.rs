//! dnsd.toml and redirector.toml as anyone may write them: reading never
//! panics, and every refusal names its file.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &[u8]| {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    for which in ["dnsd.toml", "redirector.toml"] {
        let path = std::path::Path::new(which);
        let refused = if which == "dnsd.toml" {
            cutover_workspace::parse_dnsd(path, text).err()
        } else {
            cutover_workspace::parse_redirector(path, text).err()
        };
        if let Some(errors) = refused {
            assert!(!errors.0.is_empty());
            assert!(errors.0.iter().all(|e| e.file == path));
        }
    }
});
