package io.github.lora4j.benchmarks;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.benchmarks.OverheadProbe.Options;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The probe's command line and arithmetic; its timings are measured by running it, never asserted. */
class OverheadProbeTest {

    @Test
    void theIssuesCommandLineIsUnderstood() {
        Options o = OverheadProbe.parse(new String[] {"--in", "4096", "--out", "11008", "--r", "16", "--n", "1,8,64"});
        assertEquals(new Options(4096, 11008, 16, List.of(1, 8, 64), 40, false), o);
    }

    @Test
    void withoutArgumentsTheDefaultsApply() {
        assertEquals(Options.defaults(), OverheadProbe.parse(new String[0]));
        assertEquals(new Options(4096, 4096, 8, List.of(1, 8, 64), 40, false), Options.defaults());
    }

    @Test
    void batchListKeepsTheGivenOrderAndTheBudgetIsARealNumber() {
        Options o = OverheadProbe.parse(new String[] {"--n", "64, 1", "--seconds", "12.5"});
        assertEquals(List.of(64, 1), o.batches());
        assertEquals(12.5, o.seconds());
    }

    @Test
    void helpPrintsUsageAndMeasuresNothing() {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int code = OverheadProbe.run(new String[] {"--in", "64", "--help"}, print(out), print(err));
        assertEquals(0, code);
        String text = out.toString(StandardCharsets.UTF_8);
        for (String option : List.of("--in", "--out", "--r", "--n", "--seconds", "--help")) {
            assertTrue(text.contains(option), "usage should name " + option + ":\n" + text);
        }
        assertFalse(text.contains("interleaved rounds"), "help must not measure:\n" + text);
        assertEquals("", err.toString(StandardCharsets.UTF_8));
    }

    @Test
    void badArgumentsGiveOneClearMessageAndExitCodeTwo() {
        Map<List<String>, String> cases = Map.of(
                List.of("--size", "4096"), "unknown argument '--size'",
                List.of("--in"), "--in: expected a value after it, got none",
                List.of("--in", "abc"), "--in: expected an integer in 1..2147483647, got 'abc'",
                List.of("--out", "0"), "--out: expected an integer in 1..2147483647, got 0",
                List.of("--in", "64", "--out", "32", "--r", "33"), "--r: expected 1..32 (min(in, out)) for 64 × 32, got 33",
                List.of("--n", "1,,8"), "--n: expected an integer in 1..65536, got ''",
                List.of("--n", "70000"), "--n: expected an integer in 1..65536, got 70000",
                List.of("--seconds", "1"), "--seconds: expected a number in [5, 600], got '1'",
                List.of("--in", "65536", "--out", "65536"), "expected at most 268,435,456 elements",
                List.of("--r", "4", "--r", "8"), "--r: given twice");
        cases.forEach((args, expected) -> {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            int code = OverheadProbe.run(args.toArray(new String[0]), print(out), print(err));
            String message = err.toString(StandardCharsets.UTF_8);
            assertEquals(2, code, args + " -> " + message);
            assertTrue(message.contains(expected), args + ": expected the message to contain\n  " + expected
                    + "\nbut it was\n  " + message);
            assertTrue(message.contains("--help"), message);
            assertFalse(message.contains("Exception") || message.contains("\tat "), "no stack trace: " + message);
            assertEquals("", out.toString(StandardCharsets.UTF_8), "nothing measured for " + args);
        });
    }

    @Test
    void theoryIsRankTimesInPlusOutOverInTimesOut() {
        Options o = OverheadProbe.parse(new String[] {"--in", "4096", "--out", "11008", "--r", "16"});
        assertEquals(16.0 * (4096 + 11008) / (4096.0 * 11008), OverheadProbe.theory(o), 1e-15);
    }

    @Test
    void memoryCountsTheAdapterItsGradientsAdamAndScratch() {
        Options o = OverheadProbe.parse(new String[] {"--in", "4096", "--out", "11008", "--r", "16", "--n", "8,64"});
        List<Long> bytes = List.copyOf(OverheadProbe.memory(o).values());
        long params = 16L * (4096 + 11008);
        assertEquals(List.of(4L * 4096 * 11008, 4 * params, 4 * params, 8 * params, 4L * 64 * 16), bytes);
    }

    @Test
    void roundsFitTheBudgetWithinThreeAndFiveHundred() {
        assertEquals(40, OverheadProbe.rounds(10, 0.25));
        assertEquals(3, OverheadProbe.rounds(1, 1));
        assertEquals(3, OverheadProbe.rounds(-2, 1), "a spent budget still measures the minimum");
        assertEquals(500, OverheadProbe.rounds(100, 0.001));
        assertEquals(500, OverheadProbe.rounds(100, 0));
        assertEquals(" (few: the machine is slow or busy; --seconds gives more)", OverheadProbe.few(9));
        assertEquals("", OverheadProbe.few(10));
    }

    @Test
    void theBudgetIsSplitEvenlyOverForwardPhasesWithHalfAShareForMerging() {
        // 3 batch sizes and the merge phase: 3 + 0.5 shares
        assertEquals(1 / 3.5, OverheadProbe.share(3, true, false), 1e-15);
        assertEquals(1 / 1.5, OverheadProbe.share(1, true, false), 1e-15);
        assertEquals(1.0, OverheadProbe.share(0, true, true), 1e-15, "the merge phase gets what is left");
        double spent = 0;
        double left = 1;
        for (int phase = 3; phase >= 1; phase--) {
            double part = OverheadProbe.share(phase, true, false) * left;
            spent += part;
            left -= part;
        }
        assertEquals(3 / 3.5, spent, 1e-12, "forward phases get 1 share each of 3.5");
    }

    @Test
    void quantilesInterpolateBetweenOrderStatistics() {
        Samples s = new Samples();
        for (double v : new double[] {5, 1, 4, 2, 3}) {
            s.add(v);
        }
        assertEquals(3, s.median());
        assertEquals(2, s.p25());
        assertEquals(4, s.p75());
        assertEquals(1.4, s.quantile(0.1), 1e-12);   // position 0.4 between 1 and 2
        s.add(6);
        assertEquals(3.5, s.median());                // mean of the middle two
        assertEquals(Double.NaN, new Samples().median());
        assertThrows(IllegalArgumentException.class, () -> s.quantile(1.5));
    }

    @Test
    void ratiosArePerRound() {
        Samples num = new Samples();
        Samples den = new Samples();
        double[][] rounds = {{10, 5}, {30, 10}, {8, 8}};
        for (double[] r : rounds) {
            num.add(r[0]);
            den.add(r[1]);
        }
        Samples q = num.dividedBy(den);
        assertEquals(2.0, q.median());                 // ratios 2, 3, 1 -> median 2
        assertEquals(1.5, q.p25());
        Samples shorter = new Samples();
        shorter.add(1);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> num.dividedBy(shorter));
        assertTrue(e.getMessage().contains("3 and 1"), e.getMessage());
    }

    @Test
    void bytesArePrintedInBinaryUnits() {
        assertEquals("512 B", OverheadProbe.bytes(512));
        assertEquals("944.0 KiB", OverheadProbe.bytes(4L * 16 * (4096 + 11008)));
        assertEquals("172.0 MiB", OverheadProbe.bytes(4L * 4096 * 11008));
        assertEquals("1.5 GiB", OverheadProbe.bytes(3L << 29));
    }

    private static PrintStream print(ByteArrayOutputStream buf) {
        return new PrintStream(buf, true, StandardCharsets.UTF_8);
    }
}
