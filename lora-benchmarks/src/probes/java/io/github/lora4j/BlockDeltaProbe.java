package io.github.lora4j;

import io.github.lora4j.benchmarks.probes.Probes;
import java.io.PrintStream;
import java.lang.ref.Reference;
import java.nio.FloatBuffer;
import java.util.Arrays;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: an exact merge + unmerge with Δ = s·B·A computed by blocks of rows through OpenBLAS on both cores
 * (one multithreaded sgemm per block), each block followed by the element pass on the calling thread (round trip,
 * mismatch scan), against lora-core's own pair ({@code ExactMerge.merge} then {@code unmerge}, Δ in Java). Medians
 * of {@code reps} pairs, 3 rounds, with the elements per pair whose round trip is inexact.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-03-side-by-side-zen4/README.md}, item 4: at 4096², r = 64 90–125
 * ms against 89–137 ms for the Java pass; OpenBLAS's workers spin on the second core while the Java pass runs, so the
 * route gains nothing at 4096².
 *
 * <p>In package {@code io.github.lora4j} because it times {@code ExactMerge}, which is package-private: the pass
 * alone, without {@code LoraLinear}'s bookkeeping around it, is what the blocks are compared with. On the class path
 * the package is one runtime package with lora-core's, so this compiles and runs.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.BlockDeltaProbe 4096 64 5 256
 * </pre>
 * Arguments: {@code d} (W is {@code [d, d]}), {@code r}, {@code reps} (pairs per median), {@code block} (rows per
 * sgemm; must divide d).
 */
public final class BlockDeltaProbe {

    private BlockDeltaProbe() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code d r reps block}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code d r reps block}
     */
    public static void run(PrintStream out, String... args) {
        int d = Probes.positive("BlockDeltaProbe", args, 0, "d", null);
        int r = Probes.positive("BlockDeltaProbe", args, 1, "r", null);
        int reps = Probes.positive("BlockDeltaProbe", args, 2, "reps", null);
        int block = Probes.positive("BlockDeltaProbe", args, 3, "block", null);
        if (d % block != 0) {
            throw new IllegalArgumentException("BlockDeltaProbe: block (" + block + " rows) must divide d (" + d + ")");
        }
        INDArray w = Nd4j.rand(DataType.FLOAT, d, d);
        INDArray a = Nd4j.rand(DataType.FLOAT, r, d).muli(0.01);
        INDArray b = Nd4j.rand(DataType.FLOAT, d, r).muli(0.01);
        INDArray orig = w.dup();
        FloatPointer ap = new FloatPointer(a.data().addressPointer());
        FloatPointer bp = new FloatPointer(b.data().addressPointer());
        INDArray scratch = Nd4j.create(DataType.FLOAT, block, d);
        FloatPointer sp = new FloatPointer(scratch.data().addressPointer());
        FloatBuffer sb = scratch.data().asNioFloat();
        FloatBuffer wb = w.data().asNioFloat();
        int size = block * d;
        float[] dd = new float[size];
        float[] ww = new float[size];
        float[] mm = new float[size];
        float[] back = new float[size];
        for (int round = 0; round < 3; round++) {
            long[] t = new long[reps];
            long[] u = new long[reps];
            long misses = 0;
            for (int q = 0; q < reps; q++) {
                long t0 = System.nanoTime();
                for (int dir = 0; dir < 2; dir++) {
                    for (int i = 0; i < d; i += block) {
                        // Δ rows i..i+block = s B[i.., :] A   [block, d], s = 0.5
                        openblas_nolapack.cblas_sgemm(101, 111, 111, block, d, r, 0.5f,
                                new FloatPointer(bp).position((long) i * r), r, ap, d, 0f, sp, d);
                        sb.get(0, dd, 0, size);
                        wb.get(i * d, ww, 0, size);
                        if (dir == 0) {
                            for (int j = 0; j < size; j++) {
                                float m = ww[j] + dd[j];
                                mm[j] = m;
                                back[j] = m - dd[j];
                            }
                            for (int j = Arrays.mismatch(back, 0, size, ww, 0, size); j >= 0; ) {
                                misses++;
                                int next = j + 1 >= size ? -1 : Arrays.mismatch(back, j + 1, size, ww, j + 1, size);
                                j = next < 0 ? -1 : j + 1 + next;
                            }
                            wb.put(i * d, mm, 0, size);
                        } else {
                            for (int j = 0; j < size; j++) {
                                mm[j] = ww[j] - dd[j];
                            }
                            wb.put(i * d, mm, 0, size);
                        }
                    }
                }
                t[q] = System.nanoTime() - t0;
                w.assign(orig);
                t0 = System.nanoTime();
                ExactMerge.unmerge(ExactMerge.merge(w, false, a, b, 0.5));
                u[q] = System.nanoTime() - t0;
            }
            out.printf("d=%d r=%d block %d rows: gemm-block pair %.2f ms | today's pair %.2f ms (misses/pair %d)%n",
                    d, r, block, Probes.medianMs(t), Probes.medianMs(u), misses / reps);
        }
        // The raw pointers above do not keep their arrays' native memory alive; these references do.
        Reference.reachabilityFence(a);
        Reference.reachabilityFence(b);
        Reference.reachabilityFence(scratch);
    }
}
