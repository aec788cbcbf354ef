package io.github.lora4j.benchmarks.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class IntervalTest {

    @Test
    void aQuotientsRangeIsLowOverHighToHighOverLow() {
        Interval q = new Interval(4.0, 3.0, 5.0).over(new Interval(2.0, 1.0, 4.0));
        assertEquals(new Interval(2.0, 0.75, 5.0), q);
    }

    @Test
    void aDenominatorRangeReachingZeroLeavesTheUpperEndOpen() {
        Interval q = new Interval(1.0, 0.5, 1.5).over(new Interval(0.5, 0.0, 1.0));
        assertEquals(Double.POSITIVE_INFINITY, q.high());
        assertEquals("2.000 [0.500, ∞]", q.formatRatio());
    }

    @Test
    void ratiosPrintWithTheirRange() {
        assertEquals("1.012 [0.990, 1.034]", new Interval(1.0123, 0.9901, 1.0344).formatRatio());
        assertEquals("—", new Interval(Double.NaN, Double.NaN, Double.NaN).formatRatio());
        assertEquals("1.500", new Interval(1.5, Double.NaN, Double.NaN).formatRatio());
    }

    @Test
    void aMediansRangeIsTheRelativeScoreErrorOfTheMean() {
        // error 2 % of the mean 105: the median 100 gets 100 · (1 ± 2/105)
        Measurement m = new Measurement("B.m", Map.of(), 100, 105, 2.1, 10, List.of(100.0));
        Interval i = m.interval();
        assertEquals(100, i.value());
        assertEquals(98, i.low(), 1e-12);
        assertEquals(102, i.high(), 1e-12);
    }

    @Test
    void twoOrMoreForksWidenTheRangeToHoldEveryForksMedian() {
        Measurement m = new Measurement("B.m", Map.of(), 100, 100, 1, 20, List.of(97.0, 100.5, 104.0));
        Interval i = m.interval();
        assertEquals(97, i.low(), 1e-12);
        assertEquals(104, i.high(), 1e-12);
        assertEquals(104.0 / 97 - 1, m.forkSpread(), 1e-12);
    }

    @Test
    void oneForksMedianDoesNotWidenTheRangeAndHasNoSpread() {
        Measurement m = new Measurement("B.m", Map.of(), 100, 100, Double.NaN, 20, List.of(120.0));
        assertEquals(Interval.exact(100), m.interval());
        assertTrue(Double.isNaN(m.forkSpread()));
    }
}
