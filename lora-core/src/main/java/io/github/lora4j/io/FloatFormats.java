package io.github.lora4j.io;

/**
 * Bit-exact conversions between binary16 (IEEE half, safetensors {@code F16}), bfloat16 ({@code BF16}) and the
 * Java floating types. Written here because Java 17 has no {@code Float.float16ToFloat} and ND4J's casts are
 * not documented as round-to-nearest-even.
 *
 * <p>Widening ({@code F16}/{@code BF16} to float) is exact. Narrowing rounds to nearest, ties to even, directly
 * from the {@code double} value (one rounding, so a {@code DOUBLE} source is not rounded twice); values beyond the
 * largest finite number become infinity and NaN stays NaN (quiet, sign and top payload bits kept).
 */
final class FloatFormats {

    private FloatFormats() {
    }

    /** The float equal to binary16 {@code bits} (low 16 bits used). */
    static float halfToFloat(int bits) {
        int sign = (bits >>> 15) & 1;
        int exp = (bits >>> 10) & 0x1F;
        int frac = bits & 0x3FF;
        if (exp == 0x1F) {
            // Infinity or NaN: keep the payload in the top fraction bits, as hardware widening does.
            return Float.intBitsToFloat((sign << 31) | 0x7F80_0000 | (frac << 13));
        }
        double magnitude = exp == 0
                ? Math.scalb((double) frac, -24)              // subnormal: frac · 2^-24
                : Math.scalb((double) (0x400 | frac), exp - 25); // normal: 1.frac · 2^(exp-15)
        // Every binary16 value is a float, so the cast is exact.
        return (float) (sign == 0 ? magnitude : -magnitude);
    }

    /** The float equal to bfloat16 {@code bits} (low 16 bits used): bfloat16 is the top half of a float. */
    static float bfloat16ToFloat(int bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /** {@code value} rounded to binary16, ties to even. */
    static short toHalf(double value) {
        return (short) round(value, 5, 10);
    }

    /** {@code value} rounded to bfloat16, ties to even. */
    static short toBfloat16(double value) {
        return (short) round(value, 8, 7);
    }

    /**
     * The bits of {@code value} rounded, ties to even, to the binary format with {@code expBits} exponent bits and
     * {@code fracBits} fraction bits (IEEE layout: sign, biased exponent, fraction; subnormals; bias
     * {@code 2^(expBits-1) - 1}). With (8, 23) it equals {@code Float.floatToRawIntBits((float) value)} for
     * every non-NaN value, which the tests check.
     */
    static int round(double value, int expBits, int fracBits) {
        long bits = Double.doubleToRawLongBits(value);
        int sign = (int) (bits >>> 63) << (expBits + fracBits);
        long abs = bits & Long.MAX_VALUE;
        int infinity = ((1 << expBits) - 1) << fracBits;
        int doubleExp = (int) (abs >>> 52);
        long doubleFrac = abs & ((1L << 52) - 1);
        if (doubleExp == 0x7FF) {
            if (doubleFrac == 0) {
                return sign | infinity;
            }
            int payload = (int) (doubleFrac >>> (52 - fracBits));
            return sign | infinity | (1 << (fracBits - 1)) | payload;
        }
        if (doubleExp == 0) {
            // Zero or a double subnormal (< 2^-1022): far below half the smallest subnormal of any target.
            return sign;
        }
        int bias = (1 << (expBits - 1)) - 1;
        int e = doubleExp - 1023;
        if (e > bias) {
            // >= 2^(bias+1): beyond the largest finite value (which is < 2^(bias+1)) at any rounding.
            return sign | infinity;
        }
        int minExp = 1 - bias;
        long m = doubleFrac | (1L << 52); // value = m · 2^(e-52)
        // Bits of m to drop: down to the target's quantum, 2^(e-fracBits) for normals, 2^(minExp-fracBits) below.
        int shift = 52 - fracBits + (e >= minExp ? 0 : minExp - e);
        if (shift >= 54) {
            // value < 2^(minExp-fracBits-1), half the smallest subnormal: rounds to zero.
            return sign;
        }
        long q = m >>> shift;
        long rem = m & ((1L << shift) - 1);
        long half = 1L << (shift - 1);
        if (rem > half || (rem == half && (q & 1) == 1)) {
            q++;
        }
        // For normals q = 2^fracBits + fraction; a carry to 2^(fracBits+1) rolls into the exponent field by itself.
        // For subnormals q is the fraction; q = 2^fracBits is exactly the smallest normal's encoding.
        long magnitude = e >= minExp ? ((long) (e + bias) << fracBits) + (q - (1L << fracBits)) : q;
        return sign | (int) Math.min(magnitude, infinity);
    }
}
