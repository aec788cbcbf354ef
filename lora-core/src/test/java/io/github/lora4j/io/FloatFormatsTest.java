package io.github.lora4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.junit.jupiter.api.Test;

/**
 * The F16/BF16 conversions against values fixed by the IEEE 754 / bfloat16 definitions and against an
 * independent brute-force rounding (nearest of all 65,536 encodings, ties to the even encoding).
 */
class FloatFormatsTest {

    @Test
    void knownHalfValuesWidenExactly() {
        assertEquals(1.0f, FloatFormats.halfToFloat(0x3C00));
        assertEquals(-2.5f, FloatFormats.halfToFloat(0xC100));
        assertEquals(65504.0f, FloatFormats.halfToFloat(0x7BFF));
        assertEquals((float) Math.pow(2, -24), FloatFormats.halfToFloat(0x0001)); // smallest subnormal
        assertEquals((float) Math.pow(2, -14), FloatFormats.halfToFloat(0x0400)); // smallest normal
        assertEquals(Float.floatToRawIntBits(-0.0f), Float.floatToRawIntBits(FloatFormats.halfToFloat(0x8000)));
        assertEquals(Float.POSITIVE_INFINITY, FloatFormats.halfToFloat(0x7C00));
        assertEquals(Float.NEGATIVE_INFINITY, FloatFormats.halfToFloat(0xFC00));
        assertTrue(Float.isNaN(FloatFormats.halfToFloat(0x7E00)));
    }

    @Test
    void knownBfloat16ValuesWidenExactly() {
        assertEquals(1.0f, FloatFormats.bfloat16ToFloat(0x3F80));
        assertEquals(-2.5f, FloatFormats.bfloat16ToFloat(0xC020));
        assertEquals((float) Math.pow(2, -133), FloatFormats.bfloat16ToFloat(0x0001)); // smallest subnormal
        assertEquals(Float.POSITIVE_INFINITY, FloatFormats.bfloat16ToFloat(0x7F80));
    }

    @Test
    void everyHalfSurvivesWideningAndNarrowingAndWideningIsMonotonic() {
        float previous = Float.NEGATIVE_INFINITY;
        for (int h = 0; h <= 0x7C00; h++) { // +0 up to +inf, in encoding order = value order
            float f = FloatFormats.halfToFloat(h);
            assertEquals(h, FloatFormats.toHalf(f) & 0xFFFF, "half 0x" + Integer.toHexString(h));
            assertEquals(h | 0x8000, FloatFormats.toHalf(-f) & 0xFFFF, "half -0x" + Integer.toHexString(h));
            assertTrue(h == 0 || f > previous, "widening must be strictly increasing at 0x" + Integer.toHexString(h));
            previous = f;
        }
        for (int h = 0x7C01; h < 0x8000; h++) { // NaNs stay NaNs, quiet
            int back = FloatFormats.toHalf(FloatFormats.halfToFloat(h)) & 0xFFFF;
            assertTrue((back & 0x7C00) == 0x7C00 && (back & 0x3FF) != 0, "NaN 0x" + Integer.toHexString(h));
        }
    }

    @Test
    void everyBfloat16SurvivesWideningAndNarrowing() {
        for (int h = 0; h < 0x10000; h++) {
            float f = FloatFormats.bfloat16ToFloat(h);
            int back = FloatFormats.toBfloat16(f) & 0xFFFF;
            if (Float.isNaN(f)) {
                assertTrue(Float.isNaN(FloatFormats.bfloat16ToFloat(back)), "NaN 0x" + Integer.toHexString(h));
            } else {
                assertEquals(h, back, "bf16 0x" + Integer.toHexString(h));
            }
        }
    }

    @Test
    void tiesRoundToEven() {
        // 1 + 2^-11 lies halfway between half 0x3C00 (even) and 0x3C01: goes down; 1 + 3·2^-11 goes up to 0x3C02.
        assertEquals(0x3C00, FloatFormats.toHalf(1 + Math.pow(2, -11)) & 0xFFFF);
        assertEquals(0x3C02, FloatFormats.toHalf(1 + 3 * Math.pow(2, -11)) & 0xFFFF);
        // 2^-25 is halfway between 0 and the smallest subnormal: to 0; just above it: to the subnormal.
        assertEquals(0x0000, FloatFormats.toHalf(Math.pow(2, -25)) & 0xFFFF);
        assertEquals(0x0001, FloatFormats.toHalf(Math.nextUp(Math.pow(2, -25))) & 0xFFFF);
        // 65520 is halfway between 65504 (odd encoding 0x7BFF) and 65536 (= infinity's slot): to infinity.
        assertEquals(0x7C00, FloatFormats.toHalf(65520.0) & 0xFFFF);
        assertEquals(0x7BFF, FloatFormats.toHalf(Math.nextDown(65520.0)) & 0xFFFF);
        // bf16: 1 + 2^-8 halfway between 0x3F80 and 0x3F81: to 0x3F80.
        assertEquals(0x3F80, FloatFormats.toBfloat16(1 + Math.pow(2, -8)) & 0xFFFF);
        assertEquals(0x3F82, FloatFormats.toBfloat16(1 + 3 * Math.pow(2, -8)) & 0xFFFF);
    }

    @Provide
    Arbitrary<Double> anyDouble() {
        return Arbitraries.longs().map(Double::longBitsToDouble).filter(d -> !Double.isNaN(d));
    }

    @Provide
    Arbitrary<Double> halfRange() {
        return Arbitraries.frequencyOf(
                net.jqwik.api.Tuple.of(3, Arbitraries.doubles().between(-70000, 70000).ofScale(12)),
                net.jqwik.api.Tuple.of(1, Arbitraries.doubles().between(-1, 1).ofScale(17).map(x -> x * 1e-4)),
                // exact midpoints between neighbouring halves, to exercise the ties
                net.jqwik.api.Tuple.of(2, Arbitraries.integers().between(0, 0x7BFE).map(h ->
                        ((double) FloatFormats.halfToFloat(h) + FloatFormats.halfToFloat(h + 1)) / 2)));
    }

    @Provide
    Arbitrary<Double> bfloat16Range() {
        return Arbitraries.frequencyOf(
                net.jqwik.api.Tuple.of(2, anyDouble()),
                // exact midpoints between neighbouring finite bfloat16 values (exact in double), to exercise ties
                net.jqwik.api.Tuple.of(1, Arbitraries.integers().between(0, 0x7F7E).map(h ->
                        ((double) FloatFormats.bfloat16ToFloat(h) + FloatFormats.bfloat16ToFloat(h + 1)) / 2)));
    }

    @Property(tries = 3000)
    void genericRoundingToBinary32EqualsJavasFloatCast(@ForAll("anyDouble") double d) {
        assertEquals(Float.floatToRawIntBits((float) d), FloatFormats.round(d, 8, 23), "value " + d);
    }

    @Property(tries = 3000)
    void halfRoundingIsNearestTiesToEven(@ForAll("halfRange") double d) {
        assertEquals(bruteForce(d, true), FloatFormats.toHalf(d) & 0xFFFF, "value " + d);
    }

    @Property(tries = 3000)
    void bfloat16RoundingIsNearestTiesToEven(@ForAll("bfloat16Range") double d) {
        assertEquals(bruteForce(d, false), FloatFormats.toBfloat16(d) & 0xFFFF, "value " + d);
    }

    /**
     * Nearest encoding by scanning all finite positive encodings; ties to the even encoding; beyond the largest
     * finite value by at least half its ulp, infinity (IEEE 754: round as if the exponent range were unbounded).
     */
    private static int bruteForce(double d, boolean half) {
        int sign = d < 0 || (d == 0 && 1 / d < 0) ? 0x8000 : 0;
        double x = Math.abs(d);
        int inf = half ? 0x7C00 : 0x7F80;
        double max = widen(inf - 1, half);
        double maxUlp = max - widen(inf - 2, half);
        if (x >= max + maxUlp / 2) {
            return sign | inf;
        }
        int best = 0;
        double bestErr = Double.POSITIVE_INFINITY;
        // Values increase with the encoding: binary search for the neighbours instead of a full scan.
        int lo = 0;
        int hi = inf - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (widen(mid, half) <= x) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        for (int c = Math.max(0, lo - 1); c <= Math.min(inf - 1, lo + 1); c++) {
            double err = Math.abs(widen(c, half) - x);
            if (err < bestErr || (err == bestErr && (c & 1) == 0)) {
                best = c;
                bestErr = err;
            }
        }
        return sign | best;
    }

    private static double widen(int bits, boolean half) {
        return half ? FloatFormats.halfToFloat(bits) : FloatFormats.bfloat16ToFloat(bits);
    }
}
