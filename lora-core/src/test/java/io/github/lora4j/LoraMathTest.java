package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

class LoraMathTest {

    @Test
    void theMissionStatementNumbers() {
        assertEquals(16_777_216L, LoraMath.fullParameters(4096, 4096));
        assertEquals(65_536L, LoraMath.loraParameters(4096, 4096, 8));
        assertEquals(0.00390625, LoraMath.overheadRatio(4096, 4096, 8), 0.0);
        assertEquals(0.99609375, LoraMath.savings(4096, 4096, 8), 0.0);
    }

    @Test
    void largestRankKeeping99PercentFor1024x1024IsFive() {
        // r·2048 <= 0.01·1024² = 10,485.76  ->  r <= 5.12
        assertEquals(5, LoraMath.maxRankForSavings(1024, 1024, 0.99));
        assertTrue(LoraMath.savings(1024, 1024, 5) >= 0.99);
        assertTrue(LoraMath.savings(1024, 1024, 6) < 0.99);
    }

    @Test
    void noRankQualifiesWhenEvenRankOneSavesTooLittle() {
        assertEquals(0, LoraMath.maxRankForSavings(2, 2, 0.9));
    }

    @Property
    void maxRankForSavingsIsTheBoundary(@ForAll @IntRange(min = 1, max = 8192) int d, @ForAll @IntRange(min = 1, max = 8192) int k,
                                        @ForAll @DoubleRange(min = 0, max = 0.999) @net.jqwik.api.constraints.Scale(3) double target) {
        int r = LoraMath.maxRankForSavings(d, k, target);
        if (r > 0) {
            assertTrue(LoraMath.savings(d, k, r) >= target, "rank " + r + " must keep the target");
        }
        if (r < Math.min(d, k)) {
            assertTrue(LoraMath.savings(d, k, r + 1) < target, "rank " + (r + 1) + " must miss the target");
        }
    }

    @Test
    void invalidArgumentsAreNamed() {
        assertEquals("dimensions must be >= 1, got d=0, k=3",
                assertThrows(IllegalArgumentException.class, () -> LoraMath.fullParameters(0, 3)).getMessage());
        assertEquals("rank must be >= 1, got 0",
                assertThrows(IllegalArgumentException.class, () -> LoraMath.loraParameters(3, 3, 0)).getMessage());
        assertEquals("targetSavings must be in [0, 1), got 1.0",
                assertThrows(IllegalArgumentException.class, () -> LoraMath.maxRankForSavings(3, 3, 1.0)).getMessage());
    }

    @Test
    void parameterCountsAboveLongAreRefusedNamingTheArguments() {
        long big = 1L << 40;
        IllegalArgumentException full = assertThrows(IllegalArgumentException.class,
                () -> LoraMath.fullParameters(big, big));
        assertTrue(full.getMessage().contains("d·k") && full.getMessage().contains("d=" + big + ", k=" + big),
                full.getMessage());
        IllegalArgumentException lora = assertThrows(IllegalArgumentException.class,
                () -> LoraMath.loraParameters(Long.MAX_VALUE / 2, Long.MAX_VALUE / 2, 3));
        assertTrue(lora.getMessage().contains("r·(d + k)")
                && lora.getMessage().contains("r=3"), lora.getMessage());
        assertThrows(IllegalArgumentException.class, () -> LoraMath.loraParameters(Long.MAX_VALUE, 1, 1));
        assertThrows(IllegalArgumentException.class, () -> LoraMath.savings(big, big, 8));
        assertThrows(IllegalArgumentException.class, () -> LoraMath.overheadRatio(big, big, 8));
        assertThrows(IllegalArgumentException.class, () -> LoraMath.maxRankForSavings(big, big, 0.5));
    }
}
