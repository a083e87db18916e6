//! The memory a burst freed goes back to the system once the worker gives it back
//! (`rollbackd::memory`). Its own test binary, so that no other test's allocations move the
//! resident set it measures.

/// 100 MiB in small blocks, freed below a block still in use: glibc keeps such memory unless
/// it is asked to trim its arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn freed_memory_goes_back_to_the_system() {
    use rollbackd::memory::{give_back, resident_kib};
    const MIB: u64 = 1024;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let blocks: Vec<Box<[u8; 192]>> = (0..550_000u32)
        .map(|i| Box::new([u8::try_from(i % 251).unwrap_or(1); 192]))
        .collect();
    let pin = Box::new([7u8; 192]);
    let high = resident_kib();
    drop(blocks);
    let freed = resident_kib();
    runtime.block_on(give_back());
    let after = resident_kib();
    assert_eq!(pin[0], 7);
    assert!(high > 100 * MIB, "the blocks were not resident: {high} KiB");
    assert!(
        after + 60 * MIB < high,
        "RSS {high} KiB with the blocks, {freed} KiB once they were freed, {after} KiB after giving memory back"
    );
    eprintln!("RSS {high} KiB with the blocks, {freed} KiB freed, {after} KiB given back");
}
