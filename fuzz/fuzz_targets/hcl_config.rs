//! Fuzzes the HCL config loaders (`spire-server`, `spire-agent`, OIDC provider) and Go-style
//! durations: never panic on any text; a duration that parses formats back to one that parses
//! to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = spire_config::ServerConfig::parse(
        text,
        "fuzz.conf",
        &spire_config::ServerOverrides::default(),
    );
    let _ = spire_config::AgentConfig::parse(
        text,
        "fuzz.conf",
        &spire_config::AgentOverrides::default(),
    );
    let _ = spire_config::OidcConfig::parse(text, "fuzz.conf");
    if let Ok(d) = spire_config::parse_go_duration(text) {
        let again = spire_config::parse_go_duration(&spire_config::format_go_duration(d));
        assert_eq!(again.ok(), Some(d), "{text:?}");
    }
});
