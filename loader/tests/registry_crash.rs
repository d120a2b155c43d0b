//! Crash safety of the registry store: a child process (this test binary, re-executed) commits
//! batches of writes in a loop and is killed with SIGKILL at random moments, many times; after every
//! kill the store must open and hold whole batches only: each batch's key with all its values, the
//! counter naming the last batch, and the deletion the batch made, all or nothing.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loader::registry::{RegResult, RegValue, RegistryStore, WriteBatch};

/// Set in the child's environment to the store directory.
const CHILD_ENV: &str = "ICA_REGISTRY_CRASH_CHILD";
const ROOT: &str = r"\Registry\Machine\Software\IcaCrash";
const VALUES_PER_BATCH: u64 = 8;
/// Batches kept: batch n deletes batch n - KEEP.
const KEEP: u64 = 4;
const KILLS: usize = 50;
const TIME_LIMIT: Duration = Duration::from_secs(20);

fn batch_key(n: u64) -> String {
    format!(r"{ROOT}\Batch{n:08}")
}

/// Data of value `i` of batch `n`: sizes vary so commits touch different numbers of pages.
fn payload(n: u64, i: u64) -> Vec<u8> {
    let len = 64 + ((n * 7919 + i * 104_729) % 6000) as usize;
    (0..len)
        .map(|j| (n as usize * 31 + i as usize * 17 + j) as u8)
        .collect()
}

fn write_batch(b: &mut WriteBatch<'_>, n: u64) -> RegResult<()> {
    let key = batch_key(n);
    for i in 0..VALUES_PER_BATCH {
        b.set_value(&key, &format!("v{i}"), &RegValue::binary(&payload(n, i)))?;
    }
    b.set_value(ROOT, "Last", &RegValue::qword(n))?;
    if n >= KEEP {
        b.delete_tree(&batch_key(n - KEEP))?;
    }
    Ok(())
}

/// Checks the store holds exactly the state after some whole number of batches; returns how many.
fn check(store: &RegistryStore) -> u64 {
    let last = if store.key_exists(ROOT).unwrap() {
        store.value(ROOT, "Last").unwrap()
    } else {
        None
    };
    let Some(last) = last else {
        assert!(
            !store.key_exists(ROOT).unwrap() || store.subkeys(ROOT).unwrap().is_empty(),
            "batches without a counter"
        );
        return 0;
    };
    let last = last.as_qword().expect("Last is a REG_QWORD");
    let first = (last + 1).saturating_sub(KEEP);
    let expected: Vec<String> = (first..=last).map(|n| format!("Batch{n:08}")).collect();
    assert_eq!(
        store.subkeys(ROOT).unwrap(),
        expected,
        "after batch {last}: exactly batches {first}..={last}"
    );
    for n in first..=last {
        let values = store.values(&batch_key(n)).unwrap();
        let want: Vec<(String, RegValue)> = (0..VALUES_PER_BATCH)
            .map(|i| (format!("v{i}"), RegValue::binary(&payload(n, i))))
            .collect();
        assert!(values == want, "batch {n} is not whole");
    }
    last + 1
}

/// The child: commits batches until it is killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // only meaningful when re-executed by sigkill_leaves_whole_batches
    };
    let store = RegistryStore::open(Path::new(&dir)).expect("child opens the store");
    let mut n = check(&store);
    loop {
        store.write(|b| write_batch(b, n)).expect("commit");
        n += 1;
    }
}

/// xorshift64*: enough randomness for kill times, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn sigkill_leaves_whole_batches() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ica-registry-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exe = std::env::current_exe().expect("test binary");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let (mut kills, mut batches, mut mid_run) = (0, 0, 0);
    while kills < KILLS && started.elapsed() < TIME_LIMIT {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--test-threads=1", "--nocapture"])
            .env(CHILD_ENV, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        std::thread::sleep(Duration::from_micros(5_000 + rng.next() % 150_000));
        child.kill().expect("SIGKILL");
        let out = child.wait_with_output().expect("reap the child");
        assert_eq!(
            out.status.signal(),
            Some(9),
            "the child must die by SIGKILL, not exit (seed {seed:#x}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        kills += 1;
        let store = RegistryStore::open(&dir).unwrap_or_else(|e| {
            panic!("store does not open after kill {kills} (seed {seed:#x}): {e}")
        });
        let now = check(&store);
        if now > batches {
            mid_run += 1;
        }
        batches = now;
    }
    eprintln!(
        "{kills} SIGKILLs in {:.1} s, {batches} batches committed, {mid_run} kills after progress",
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= 20, "only {kills} kills within the time limit");
    assert!(
        mid_run >= kills / 2,
        "the child should usually be killed while committing ({mid_run} of {kills})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
