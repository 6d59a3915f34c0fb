//! Transparent huge pages for the large buffers that searches read at random (vectors, walk
//! codes, link lists): with 4 KiB pages nearly every row a graph walk reads also misses the TLB.
//! Linux backs memory advised with `MADV_HUGEPAGE` by 2 MiB pages when transparent huge pages
//! are enabled in `madvise` or `always` mode; elsewhere, and for small buffers, this does nothing.

/// Buffers smaller than this stay on small pages (a huge page would mostly be waste).
const MIN_BYTES: usize = 4 << 20;

/// Ask for huge pages under the allocated capacity of `v`; call before the memory is written
/// (pages already touched are merged later by the kernel, if at all).
pub fn advise<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    advise_range(v.as_ptr() as usize, bytes);
}

/// Make room in `v` for `len` elements in all (amortized growth, as `Vec::reserve`), on huge
/// pages where the room is new.
pub fn reserve<T>(v: &mut Vec<T>, len: usize) {
    if len > v.capacity() {
        v.reserve(len - v.len());
        advise(v);
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
}
