//! Bounds-checked reads of fixed-size integers from byte slices.
//!
//! Every parser in this crate reads untrusted bytes; going through these helpers (which return
//! `None` past the end) instead of indexing keeps "malformed input never panics" true by
//! construction.

/// `len` bytes starting at `at`, if they are all there.
pub(crate) fn slice(buf: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    buf.get(at..at.checked_add(len)?)
}

fn array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    slice(buf, at, N)?.try_into().ok()
}

pub(crate) fn be_u16(buf: &[u8], at: usize) -> Option<u16> {
    array(buf, at).map(u16::from_be_bytes)
}

pub(crate) fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    array(buf, at).map(u32::from_be_bytes)
}

pub(crate) fn be_u64(buf: &[u8], at: usize) -> Option<u64> {
    array(buf, at).map(u64::from_be_bytes)
}

pub(crate) fn le_u16(buf: &[u8], at: usize) -> Option<u16> {
    array(buf, at).map(u16::from_le_bytes)
}

pub(crate) fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    array(buf, at).map(u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end_without_panicking() {
        let b = [1, 2, 3, 4, 5];
        assert_eq!(be_u16(&b, 0), Some(0x0102));
        assert_eq!(le_u16(&b, 3), Some(0x0504));
        assert_eq!(be_u32(&b, 1), Some(0x0203_0405));
        assert_eq!(le_u32(&b, 2), None);
        assert_eq!(be_u64(&b, 0), None);
        assert_eq!(slice(&b, usize::MAX, 2), None);
        assert_eq!(slice(&b, 5, 0), Some(&[][..]));
        assert_eq!(slice(&b, 6, 0), None);
    }
}
