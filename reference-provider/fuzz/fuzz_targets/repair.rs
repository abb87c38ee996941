//! Fuzz parse + repair: any bytes must give a non-empty repaired mesh whose encoding is valid
//! binary STL, or a typed error; never a panic.
#![no_main]

use fixmyprint_heal::{self as heal, RepairOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = RepairOptions {
        max_file_bytes: 1 << 20,
        ..RepairOptions::default()
    };
    if let Ok(r) = heal::repair(data, &options) {
        let out = r.to_stl_bytes();
        let n = u32::from_le_bytes([out[80], out[81], out[82], out[83]]) as usize;
        assert_eq!(out.len(), 84 + 50 * n);
        assert_eq!(n, r.mesh.triangles.len());
        // A successful repair is never empty, and its output parses again.
        assert!(n > 0);
        assert!(heal::stl::parse(&out, &options).is_ok());
    }
});
