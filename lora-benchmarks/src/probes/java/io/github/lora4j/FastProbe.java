package io.github.lora4j;

import static org.bytedeco.openblas.global.openblas_nolapack.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_nolapack.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_nolapack.cblas_sgemm;

import io.github.lora4j.benchmarks.probes.Probes;
import java.io.PrintStream;
import org.bytedeco.javacpp.FloatPointer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: where a FAST merge + unmerge spends its time. It splits {@code LoraLinear.merge(MergeMode.FAST)} +
 * {@code unmerge()} into two bare {@code cblas_sgemm} calls {@code W ± s·B·A}, the same two products through
 * lora-core's kernel seam ({@code Merge.deltaInto}), and the NaN/overflow scans of A and B
 * ({@code Checks.maxAbsOrNaN}); medians of {@code it} calls, 3 rounds.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-02-side-by-side-skylakex/README.md}, item 4 (the table): from
 * 1024² on the pair is within 1–12 % of the two bare calls; at 64 × 64 the seam's checks and the scans are most of it.
 *
 * <p>In package {@code io.github.lora4j} because it calls those package-private pieces of lora-core: what it
 * measures is their cost, which no public call isolates. On the class path (the benchmarks jar, or lora-core's
 * classes beside these) the package is one runtime package, so this compiles and runs; if lora-core renames the
 * pieces, this file stops compiling, which is the point.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.FastProbe 4096 8 30
 * </pre>
 * Arguments: {@code d} (W is {@code [d, d]}), {@code r}, {@code it} (calls per median).
 */
public final class FastProbe {

    private FastProbe() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code d r it}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code d r it}
     */
    public static void run(PrintStream out, String... args) {
        int d = Probes.positive("FastProbe", args, 0, "d", null);
        int r = Probes.positive("FastProbe", args, 1, "r", null);
        int it = Probes.positive("FastProbe", args, 2, "it", null);
        INDArray w = Nd4j.rand(DataType.FLOAT, d, d).subi(0.5);
        LoraLinear layer = LoraLinear.wrap(w.dup(), null, LoraConfig.builder().rank(r).alpha(2 * r).build());
        LoraAdapter ad = layer.adapter(LoraLinear.DEFAULT_ADAPTER);
        ad.b().assign(Nd4j.rand(DataType.FLOAT, d, r).subi(0.5).muli(0.01));
        INDArray a = ad.a();
        INDArray b = ad.b();
        FloatPointer pw = new FloatPointer(w.data().addressPointer());
        FloatPointer pa = new FloatPointer(a.data().addressPointer());
        FloatPointer pb = new FloatPointer(b.data().addressPointer());
        for (int round = 0; round < 3; round++) {
            double pair = Probes.medianUs(() -> {
                layer.merge(MergeMode.FAST);
                layer.unmerge();
            }, it);
            double gemms = Probes.medianUs(() -> {
                // W += s B A, then W -= s B A   [d, d], s = alpha / r = 2
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, r, 2f, pb, r, pa, d, 1f, pw, d);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, r, -2f, pb, r, pa, d, 1f, pw, d);
            }, it);
            double kernels = Probes.medianUs(() -> {
                Merge.deltaInto(w, WeightLayout.OUT_IN, ad, 2.0);
                Merge.deltaInto(w, WeightLayout.OUT_IN, ad, -2.0);
            }, it);
            double scans = Probes.medianUs(() -> {
                Checks.maxAbsOrNaN(a);
                Checks.maxAbsOrNaN(b);
            }, it);
            out.printf("d=%d r=%d: merge+unmerge FAST %.1f us | 2 raw cblas %.1f us | 2 Kernels.gemm %.1f us"
                    + " | A,B scans %.1f us%n", d, r, pair, gemms, kernels, scans);
        }
    }
}
