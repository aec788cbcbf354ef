package io.github.lora4j.benchmarks.probes;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.benchmarks.Fixtures;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: the unmerged against the merged forward at 4096², r = 8, n = 512, into fresh outputs and into a
 * reused one ({@code forwardInto}), rounds interleaved, with the process's minor page faults per call (field 10 of
 * {@code /proc/self/stat}; -1 where that file is missing): is the unmerged / merged gap the adapter, or the memory?
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-03-side-by-side-zen4-b/README.md}, item 2: 2049 page faults per
 * fresh 8 MiB output and none into the reused one; unmerged / merged 0.96–1.16 with fresh outputs and 0.89–1.01 into
 * a reused one, for the same code.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.probes.UnmergedProbe
 * </pre>
 * Arguments, all optional: {@code d} (default 4096), {@code r} (8), {@code n} (512), {@code reps} (10 calls per
 * median). Uses lora4j's public API only.
 */
public final class UnmergedProbe {

    private UnmergedProbe() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code [d [r [n [reps]]]]}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code [d [r [n [reps]]]]}
     */
    public static void run(PrintStream out, String... args) {
        int d = Probes.positive("UnmergedProbe", args, 0, "d", 4096);
        int r = Probes.positive("UnmergedProbe", args, 1, "r", 8);
        int n = Probes.positive("UnmergedProbe", args, 2, "n", 512);
        int reps = Probes.positive("UnmergedProbe", args, 3, "reps", 10);
        Fixtures.GridCell cell = Fixtures.gridCell(d, r, n);       // the side-by-side grid's arrays
        INDArray x = cell.x();
        LoraLinear unmerged = cell.layer();
        LoraLinear merged = cell.layer();
        merged.merge(MergeMode.FAST);
        INDArray y = Nd4j.createUninitialized(x.dataType(), n, d);
        for (int round = 0; round < 3; round++) {
            out.println("round " + round);
            out.println("  merged   " + time(() -> merged.forward(x), reps));
            out.println("  unmerged " + time(() -> unmerged.forward(x), reps));
            out.println("  merged   into " + time(() -> merged.forwardInto(x, y), reps));
            out.println("  unmerged into " + time(() -> unmerged.forwardInto(x, y), reps));
        }
    }

    /** The process's minor page faults so far, or -1 if {@code /proc/self/stat} cannot be read. */
    static long minorFaults() {
        try {
            String s = Files.readString(Path.of("/proc/self/stat"));
            return Long.parseLong(s.substring(s.lastIndexOf(')') + 2).split(" ")[7]);
        } catch (IOException | RuntimeException unreadable) {
            return -1;
        }
    }

    private static String time(Runnable body, int reps) {
        long f0 = minorFaults();
        long[] t = Probes.times(body, reps);
        long faults = f0 < 0 ? -1 : (minorFaults() - f0) / reps;
        return String.format("%.1f [%.1f, %.1f] ms, %d faults/call", Probes.quantile(t, 0.5) / 1e6,
                Probes.quantile(t, 0.25) / 1e6, Probes.quantile(t, 0.75) / 1e6, faults);
    }
}
