package io.github.lora4j.benchmarks.probes;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.benchmarks.Fixtures;
import java.io.PrintStream;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: the plain (base) layer's forward against the merged layer's at 4096², n = 512, back to back, into
 * fresh outputs and into a reused one: the same one gemm, so why did the side-by-side grid time the plain one at 164
 * ms against the merged one's 96 ms? Medians of {@code reps} calls, 3 rounds.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-03-side-by-side-zen4/README.md}, item 3: plain 132–144 ms,
 * merged 139–140 ms, both 104–110 ms with {@code forwardInto}: a fresh 8 MB output costs about 30 ms there.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.probes.PlainProbe
 * </pre>
 * Arguments, all optional: {@code d} (default 4096), {@code r} (8), {@code n} (512), {@code reps} (8 calls per
 * median). Uses lora4j's public API only.
 */
public final class PlainProbe {

    private PlainProbe() {
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
        int d = Probes.positive("PlainProbe", args, 0, "d", 4096);
        int r = Probes.positive("PlainProbe", args, 1, "r", 8);
        int n = Probes.positive("PlainProbe", args, 2, "n", 512);
        int reps = Probes.positive("PlainProbe", args, 3, "reps", 8);
        Fixtures.GridCell cell = Fixtures.gridCell(d, r, n);       // the side-by-side grid's arrays
        INDArray x = cell.x();
        LoraLinear plain = cell.plain();
        LoraLinear layer = cell.layer();
        layer.merge(MergeMode.FAST);
        INDArray y = Nd4j.createUninitialized(x.dataType(), n, d);
        for (int round = 0; round < 3; round++) {
            out.printf("plain %.1f  merged %.1f  plain into %.1f  merged into %.1f ms%n",
                    Probes.medianMs(() -> plain.forward(x), reps), Probes.medianMs(() -> layer.forward(x), reps),
                    Probes.medianMs(() -> plain.forwardInto(x, y), reps),
                    Probes.medianMs(() -> layer.forwardInto(x, y), reps));
        }
    }
}
