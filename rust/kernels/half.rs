//! Conversions between `f32` and the 16-bit float formats stored by the indexes: bfloat16 (the
//! prefilter copies of FlatIndex and HNSWIndex) and IEEE half (multi-vector tokens and refine
//! copies). A leaf module: the kernels and the layout code both import from here.

/// Round to the nearest bfloat16 (ties to even), as its bit pattern.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let round = 0x7FFF + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// The `f32` value of a bfloat16 bit pattern.
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// IEEE half (bit pattern) to f32, exactly (subnormals, infinities and NaN included).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    if em >= 0x7c00 {
        return f32::from_bits(sign | 0x7f80_0000 | ((em & 0x3ff) << 13));
    }
    // Reinterpret the exponent and mantissa as an f32 of exponent bias 127 and rescale by
    // 2^(127 - 15); exact for normal and subnormal halves alike.
    let v = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(v.to_bits() | sign)
}

/// f32 to IEEE half (bit pattern), rounding to nearest even; overflow gives infinity.
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = b & 0x7fff_ffff;
    if a >= 0x7f80_0000 {
        return sign | 0x7c00 | if a > 0x7f80_0000 { 0x200 } else { 0 };
    }
    if a >= 0x477f_f000 {
        // 65520 and above round to infinity.
        return sign | 0x7c00;
    }
    if a < 0x3880_0000 {
        // Subnormal or zero half: scale so the half's lowest bit is the unit, round to even.
        let v = f32::from_bits(a) * f32::from_bits(0x4b80_0000); // * 2^24
        return sign | (v.round_ties_even() as u16);
    }
    let mant_odd = (a >> 13) & 1;
    let r = a.wrapping_add(0x0fff + mant_odd);
    sign | (((r >> 13) - ((127 - 15) << 10)) as u16)
}
