//! Transparent huge pages for the large buffers that searches read at random (vectors, walk
//! codes, link lists): with 4 KiB pages nearly every row a graph walk reads also misses the TLB.
//! Linux backs memory advised with `MADV_HUGEPAGE` by 2 MiB pages when transparent huge pages
//! are enabled in `madvise` or `always` mode; elsewhere, and for small buffers, this does nothing.
//! `RANKFUNNEL_HUGE_PAGES=0` turns the advice off (read once), for hosts where huge-page faults
//! (the kernel compacting memory to find 2 MiB) cost more than the misses they save.

/// Buffers smaller than this stay on small pages (a huge page would mostly be waste).
const MIN_BYTES: usize = 4 << 20;

/// Ask for huge pages under the allocated capacity of `v`; call before the memory is written
/// (pages already touched are merged later by the kernel, if at all).
pub fn advise<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < MIN_BYTES || !enabled() {
        return;
    }
    advise_range(v.as_ptr() as usize, bytes);
}

/// Fault in the pages under `v`'s spare capacity up to `upto` elements in all (one byte written
/// per 4 KiB), so that the writes filling them later, maybe under a lock, do not pay the faults:
/// on huge pages a fault zeroes 2 MiB and may wait for the kernel to compact memory.
pub fn prefault<T>(v: &mut Vec<T>, upto: usize) {
    let (len, upto) = (v.len(), upto.min(v.capacity()));
    if upto <= len || std::mem::size_of::<T>() == 0 {
        return;
    }
    let spare = &mut v.spare_capacity_mut()[..upto - len];
    let bytes = std::mem::size_of_val(spare);
    let base = spare.as_mut_ptr() as *mut u8;
    for off in (0..bytes).step_by(4096) {
        // SAFETY: `off < bytes`, inside the spare capacity, which may hold any bytes (it is
        // uninitialized memory that nothing reads before `v` writes its elements there).
        unsafe { base.add(off).write_volatile(0) };
    }
}

/// Make room in `v` for `len` elements in all (amortized growth, as `Vec::reserve`), on huge
/// pages where the room is new.
pub fn reserve<T>(v: &mut Vec<T>, len: usize) {
    if len > v.capacity() {
        v.reserve(len - v.len());
        advise(v);
    }
}

/// Whether the advice is on: `RANKFUNNEL_HUGE_PAGES` read once (see [`parse`]); a value it
/// refuses leaves the advice on and is reported by [`env_error`].
fn enabled() -> bool {
    env().0
}

/// The error for a `RANKFUNNEL_HUGE_PAGES` value that [`parse`] refuses, if any.
pub fn env_error() -> Option<String> {
    env().1.clone()
}

fn env() -> &'static (bool, Option<String>) {
    static ENV: std::sync::OnceLock<(bool, Option<String>)> = std::sync::OnceLock::new();
    ENV.get_or_init(|| match std::env::var("RANKFUNNEL_HUGE_PAGES") {
        Ok(v) => match parse(&v) {
            Some(on) => (on, None),
            None => (
                true,
                Some(format!(
                    "RANKFUNNEL_HUGE_PAGES={v:?} is not understood (expected 1/on/true/yes or \
                     0/off/false/no); huge pages stay on"
                )),
            ),
        },
        Err(_) => (true, None),
    })
}

/// A `RANKFUNNEL_HUGE_PAGES` value: `1|on|true|yes` or empty is on, `0|off|false|no` off (case
/// and surrounding spaces ignored); anything else `None`.
fn parse(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(target_os = "linux")]
fn advise_range(start: usize, bytes: usize) {
    const HUGE: usize = 2 << 20;
    let lo = start.next_multiple_of(HUGE);
    let hi = (start + bytes) / HUGE * HUGE;
    if hi > lo {
        // SAFETY: [lo, hi) lies inside one live allocation; MADV_HUGEPAGE changes how the kernel
        // backs it, never its contents, and a failure (THP off, old kernel) is harmless.
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: usize, _bytes: usize) {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_switch_takes_on_and_off_words_and_refuses_the_rest() {
        for v in ["", "1", "on", "TRUE", " yes "] {
            assert_eq!(super::parse(v), Some(true), "{v:?}");
        }
        for v in ["0", "off", "False", "no "] {
            assert_eq!(super::parse(v), Some(false), "{v:?}");
        }
        for v in ["2", "offf", "disable", "-1", "0x0"] {
            assert_eq!(super::parse(v), None, "{v:?}");
        }
    }

    #[test]
    fn reserve_grows_and_keeps_contents() {
        let mut v: Vec<u32> = (0..10).collect();
        super::reserve(&mut v, 3 << 20);
        assert!(v.capacity() >= 3 << 20);
        assert_eq!(v, (0..10).collect::<Vec<u32>>());
        v.resize(3 << 20, 7);
        assert_eq!(v[(3 << 20) - 1], 7);
        super::reserve(&mut v, 5);
        assert_eq!(v.len(), 3 << 20);
    }

    #[test]
    fn prefault_keeps_contents_and_stops_at_the_capacity() {
        let mut v: Vec<u32> = (0..10).collect();
        v.reserve_exact(5000);
        super::prefault(&mut v, 3000);
        super::prefault(&mut v, usize::MAX);
        super::prefault(&mut v, 4); // below the length: nothing
        assert_eq!(v, (0..10).collect::<Vec<u32>>());
        v.resize(3000, 1);
        assert_eq!((v[9], v[10], v[2999]), (9, 1, 1));
        let mut empty: Vec<u64> = Vec::new();
        super::prefault(&mut empty, 100);
        assert!(empty.is_empty());
    }

    // x86-64 only, like the test below.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn prefault_makes_the_pages_resident() {
        let mut big: Vec<u8> = Vec::with_capacity(32 << 20);
        let at = big.as_ptr() as usize + (1 << 20);
        let rss =
            |addr| smaps_field(addr, "Rss:").and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok());
        let before = rss(at).expect("the buffer is mapped");
        super::prefault(&mut big, 24 << 20);
        let after = rss(at).expect("the buffer is mapped");
        assert!(after >= before + (20 << 10), "Rss {before} kB -> {after} kB after faulting in 24 MiB");
    }

    /// The `VmFlags` of the mapping that holds `addr`, from `/proc/self/smaps`.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn vm_flags(addr: usize) -> Option<String> {
        smaps_field(addr, "VmFlags:")
    }

    /// Field `name` of the mapping that holds `addr`, from `/proc/self/smaps`.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn smaps_field(addr: usize, name: &str) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(value) = line.strip_prefix(name) {
                    return Some(value.trim().to_string());
                }
            }
        }
        None
    }

    // x86-64 only: the aarch64 tests run under qemu-user here, which neither passes the advice
    // on nor shows the guest's mappings in smaps.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn large_buffers_carry_the_huge_page_advice() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() || !super::enabled() {
            return; // a kernel without transparent huge pages refuses the advice; or it is off
        }
        let mut big: Vec<u8> = Vec::new();
        super::reserve(&mut big, 16 << 20);
        let at = (big.as_ptr() as usize).next_multiple_of(2 << 20);
        let flags = vm_flags(at).expect("the buffer is mapped");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "no huge-page advice: {flags}");
    }
}
