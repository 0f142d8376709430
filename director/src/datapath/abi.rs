//! The bytes of the abi.h map types, as the kernel stores them: one [`AbiBytes`] impl per key
//! and value type the daemon writes or reads, each with its size checked at compile time
//! against the C layout, instead of a byte view of any `T`.

use crate::bpf::types::{
    director_config, director_counter, director_hash_state, director_row, director_table_hdr,
    director_vip, director_vip_filter, director_vip_key, director_vip_slot,
};

use super::{VIP_FILTER_BITS, VIP_RANGES};

/// A map key or value type of bpf/include/abi.h, as libbpf-cargo generates it.
///
/// # Safety
///
/// Implement only (through `abi_bytes!`) for a generated abi.h type: `repr(C)`, no pointers, no
/// padding the compiler adds (abi.h spells padding out as fields, so `Default` zeroes every
/// byte), any bit pattern valid, and `SIZE` its size.
pub unsafe trait AbiBytes: Copy + Default {
    /// Its size in abi.h, which the implementation asserts.
    const SIZE: usize;

    /// The value as the kernel stores it.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the trait's contract: SIZE initialised bytes of plain data.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), Self::SIZE) }
    }

    /// A value from the kernel's bytes; missing trailing bytes (an older, shorter map value)
    /// stay zero, extra ones are ignored.
    fn from_bytes(b: &[u8]) -> Self {
        let mut v = Self::default();
        let n = Self::SIZE.min(b.len());
        // SAFETY: the trait's contract: any bit pattern is a valid value; n <= SIZE.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut Self).cast::<u8>(), n) };
        v
    }
}

macro_rules! abi_bytes {
    ($($t:ident = $size:expr;)*) => {$(
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
        // SAFETY: a generated abi.h type (see the trait); its size asserted just above.
        unsafe impl AbiBytes for $t {
            const SIZE: usize = $size;
        }
    )*};
}

abi_bytes! {
    director_config = 32;
    director_counter = 16;
    director_vip_key = 20;
    director_vip = 8 + 8 * VIP_RANGES;
    director_vip_slot = 24 + 8 + 8 * VIP_RANGES;
    director_vip_filter = 8 + VIP_FILTER_BITS / 8;
    director_table_hdr = 48;
    director_row = 72;
    director_hash_state = 64;
}
