//! Arbitrary bytes through parse → plan → lower must never panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = kiln_dockerfile::DockerIgnore::parse(text);
    let Ok(df) = kiln_dockerfile::parse(text) else { return };
    let Ok(plan) = kiln_dockerfile::plan(&df, &kiln_dockerfile::LowerOptions::default()) else { return };
    let configs: HashMap<String, kiln_dockerfile::ImageConfig> =
        plan.base_images().into_iter().map(|r| (r.reference, kiln_dockerfile::ImageConfig::default())).collect();
    let _ = plan.lower(&configs);
});
