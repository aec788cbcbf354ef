package io.github.lora4j.benchmarks.probes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.BlockDeltaProbe;
import io.github.lora4j.FastProbe;
import io.github.lora4j.GemmDeltaProbe;
import io.github.lora4j.MixedRowsProfileProbe;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BiConsumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Every probe in {@code src/probes/java} run once at a tiny shape: it must finish, print each line it documents with
 * numbers that parse, and pass its own correctness checks (the same bits where two formulations evaluate the same fma
 * chain, a small difference where two BLAS formulations should agree). No timing is asserted. The three probes in
 * package {@code io.github.lora4j} also check that lora-core's package-private pieces they call still behave.
 */
class ProbesSmokeTest {

    /** A decimal as the probes print it ({@code %.3f}, {@code %g}; a comma where the default locale uses one). */
    private static final String NUM = "(-?[0-9]+(?:[.,][0-9]+)?(?:[eE][-+]?[0-9]+)?|NaN|Infinity)";

    private static String run(BiConsumer<PrintStream, String[]> probe, String... args) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (PrintStream out = new PrintStream(bytes, true, StandardCharsets.UTF_8)) {
            probe.accept(out, args);
        }
        return bytes.toString(StandardCharsets.UTF_8);
    }

    /** The lines of {@code output} matching {@code regex} (NUM for each number), exactly {@code count} of them. */
    private static List<Matcher> lines(String output, String regex, int count) {
        Pattern p = Pattern.compile(regex.replace("NUM", NUM));
        List<Matcher> found = new ArrayList<>();
        for (String line : output.split("\\R")) {
            Matcher m = p.matcher(line);
            if (m.matches()) {
                found.add(m);
            }
        }
        assertEquals(count, found.size(), "lines matching " + p + " in\n" + output);
        return found;
    }

    /** Group {@code g} as a finite, non-negative number. */
    private static double num(Matcher m, int g) {
        double v = Double.parseDouble(m.group(g).replace(',', '.'));
        assertTrue(Double.isFinite(v) && v >= 0, "a finite time or count ≥ 0 in group " + g + " of: " + m.group());
        return v;
    }

    private static void allNumbers(List<Matcher> lines) {
        for (Matcher m : lines) {
            for (int g = 1; g <= m.groupCount(); g++) {
                if (m.group(g) != null && m.group(g).matches(NUM)) {
                    num(m, g);
                }
            }
        }
    }

    @Test
    void mixedRowsProfilePrintsEveryComponent() {
        String out = run(MixedRowsProfileProbe::run, "64", "16", "4", "2");
        allNumbers(lines(out, "pair, shuffled, with a prefetching helper thread NUM us per row", 1));
        allNumbers(lines(out, "pair, adapters in shuffled order NUM us per row \\| the same rows in adapter address "
                + "order NUM", 1));
        allNumbers(lines(out, "pair right after a threaded gemm NUM us per row \\| rows split over 2 threads: NUM, "
                + "right after a gemm NUM", 1));
        allNumbers(lines(out, "second product alternatives, us per row: raw sgemv NUM \\| sgemm m=1 NUM \\| 4 strided "
                + "saxpy NUM", 1));
        allNumbers(lines(out, "d=64 n=K=16 r=4, us per row: resolve NUM \\| first gemv NUM \\| second gemv NUM \\| "
                + "pair NUM \\| pair, one adapter NUM \\| raw cblas pair NUM \\| raw, one adapter NUM \\| touch NUM", 1));
        List<Matcher> layer = lines(out, "layer ms: one adapter NUM \\| n distinct \\(ROWS\\) NUM \\| base rows only NUM"
                + " \\| extra per row (-?[0-9.,]+) us", 1);
        for (int g = 1; g <= 3; g++) {
            num(layer.get(0), g);
        }
    }

    @Test
    void dxFormulationAgreesWithThePlainProduct() {
        String out = run(DxFormulationProbe::run, "64", "8");
        List<Matcher> rounds = lines(out, "d=64 n=8 NN NUM ms  TT\\+transpose NUM ms  maxdiff NUM", 3);
        allNumbers(rounds);
        for (Matcher m : rounds) {
            assertTrue(num(m, 3) < 1e-3, "dxᵀ = Wᵀ·gᵀ transposed back equals g·W up to rounding: " + m.group());
        }
    }

    @Test
    void fastProbeSplitsThePair() {
        allNumbers(lines(run(FastProbe::run, "64", "8", "5"), "d=64 r=8: merge\\+unmerge FAST NUM us \\| 2 raw cblas NUM us"
                + " \\| 2 Kernels.gemm NUM us \\| A,B scans NUM us", 3));
    }

    @Test
    void stepProbeTimesEachPartOfAStep() {
        allNumbers(lines(run(StepProbe::run, "64", "8", "8", "3"), "d=64 r=8 n=8 ms: forward NUM \\| backward\\(dx\\) NUM"
                + " \\| zeroGrad NUM \\|\\| forward NUM \\| backward\\(no dx\\) NUM \\| zeroGrad NUM \\|\\| raw g.W sgemm NUM",
                3));
    }

    @Test
    void smallMergeLoopCountsPairsAndOrdersItsQuartiles() {
        for (String[] args : new String[][] {{"0.2", "EXACT"}, {"0.2", "FAST"}, {"0.05", "EXACT", "1"}}) {
            Matcher m = lines(run(SmallMergeLoop::run, args), args[1] + " pairs: ([0-9]+), median NUM us, p25 NUM, p75 NUM",
                    1).get(0);
            assertTrue(num(m, 1) >= 1, m.group());
            assertTrue(num(m, 3) <= num(m, 2) && num(m, 2) <= num(m, 4), "p25 ≤ median ≤ p75: " + m.group());
        }
        assertThrows(IllegalArgumentException.class, () -> run(SmallMergeLoop::run, "0", "EXACT"));
    }

    @Test
    void unmergedProbeCountsPageFaults() {
        String out = run(UnmergedProbe::run, "64", "8", "8", "3");
        assertEquals(3, lines(out, "round [0-2]", 3).size());
        List<Matcher> timed = lines(out, "  (?:merged|unmerged) +(?:into +)?NUM \\[NUM, NUM\\] ms, (-?[0-9]+) faults/call",
                12);
        for (Matcher m : timed) {
            assertTrue(num(m, 2) <= num(m, 1) && num(m, 1) <= num(m, 3), "p25 ≤ median ≤ p75: " + m.group());
            if (Files.isReadable(Path.of("/proc/self/stat"))) {
                num(m, 4);
            }
        }
    }

    @Test
    void plainProbeTimesBothLayersBothWays() {
        allNumbers(lines(run(PlainProbe::run, "64", "8", "8", "3"),
                "plain NUM  merged NUM  plain into NUM  merged into NUM ms", 3));
    }

    @Test
    void forwardFormulationAgreesWithThePlainProduct() {
        String out = run(ForwardFormulationProbe::run, "64", "8", "5");
        allNumbers(lines(out, "d=64 n=8: x·Wᵀ NUM ms \\| W·xᵀ NUM ms \\+ transpose NUM ms", 3));
        Matcher same = lines(out, "same bits: (true|false), max diff NUM", 1).get(0);
        assertEquals("true", same.group(1), "within ND4J's epsilon: " + same.group());
        assertTrue(num(same, 2) < 1e-3, same.group());
    }

    @Test
    void gemmDeltaProbeTimesThePassAndTheTiles() {
        String out = run(GemmDeltaProbe::run, "64", "8", "2");
        allNumbers(lines(out, "d=64 r=8 exact pair NUM ms, fast pair NUM ms", 2));
        // d = 64: rows 1..32 in tiles of 64 and 1024 columns (at most 64 used), each within 2^18 multiply-adds
        allNumbers(lines(out, "  delta x2 by sgemm tiles [0-9]+ x [0-9]+: NUM ms", 2 * 6 * 2));
    }

    @Test
    void blockDeltaProbeComparesBothPairs() {
        allNumbers(lines(run(BlockDeltaProbe::run, "64", "8", "2", "16"),
                "d=64 r=8 block 16 rows: gemm-block pair NUM ms \\| today's pair NUM ms \\(misses/pair ([0-9]+)\\)", 3));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> run(BlockDeltaProbe::run, "64", "8", "2", "24"));
        assertTrue(e.getMessage().contains("block (24 rows) must divide d (64)"), e.getMessage());
    }

    @Test
    void vectorDeltaGivesTheSameBitsAsTheScalarLoop() {
        String out = run(VectorDeltaProbe::run, "64", "200000");
        lines(out, "species .*", 1);
        for (Matcher m : lines(out, "len 64: vector API NUM GFLOP/s, auto-vectorised NUM GFLOP/s; same bits (true|false)",
                4)) {
            assertEquals("true", m.group(3), m.group());
        }
    }

    @Test
    void vectorBlockedGivesTheSameBitsAsTheOneRowLoop() {
        for (Matcher m : lines(run(VectorBlockedProbe::run, "64", "8", "100000", "2"),
                "r=8: one row auto-vectorised NUM GFLOP/s \\| four rows, Vector API NUM GFLOP/s \\| same bits (true|false)",
                2)) {
            assertEquals("true", m.group(3), m.group());
        }
    }

    @Test
    void badArgumentsAreRefusedNamingTheArgument() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> run(PlainProbe::run, "64", "x"));
        assertEquals("PlainProbe: argument 2 (r) must be a whole number ≥ 1, got 'x'", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> run(StepProbe::run, "64"));
        assertEquals("StepProbe: argument 2 (r) is missing; got 1 argument(s): [64]", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> run(FastProbe::run, "64", "0", "5"));
        assertEquals("FastProbe: argument 2 (r) must be a whole number ≥ 1, got '0'", e.getMessage());
    }
}
