package io.github.lora4j;

import java.nio.FloatBuffer;
import java.util.Arrays;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * An exact merge + unmerge with Δ by row blocks through OpenBLAS on both cores (one multithreaded sgemm per block),
 * each block followed by the element pass on the calling thread (round trip, mismatch scan): against today's pair.
 */
public class BlockDeltaProbe {
    public static void main(String[] args) {
        int d = Integer.parseInt(args[0]); int r = Integer.parseInt(args[1]); int reps = Integer.parseInt(args[2]);
        int block = Integer.parseInt(args[3]);
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
        float[] dd = new float[block * d], ww = new float[block * d], mm = new float[block * d], back = new float[block * d];
        for (int round = 0; round < 3; round++) {
            long[] t = new long[reps], u = new long[reps];
            long misses = 0;
            for (int q = 0; q < reps; q++) {
                long t0 = System.nanoTime();
                for (int dir = 0; dir < 2; dir++) {
                    for (int i = 0; i < d; i += block) {
                        openblas_nolapack.cblas_sgemm(101, 111, 111, block, d, r, 0.5f,
                                new FloatPointer(bp).position((long) i * r), r, ap, d, 0f, sp, d);
                        sb.get(0, dd, 0, block * d);
                        wb.get(i * d, ww, 0, block * d);
                        if (dir == 0) {
                            for (int j = 0; j < block * d; j++) { float m = ww[j] + dd[j]; mm[j] = m; back[j] = m - dd[j]; }
                            for (int j = Arrays.mismatch(back, 0, block * d, ww, 0, block * d); j >= 0; ) {
                                misses++;
                                int next = j + 1 >= block * d ? -1 : Arrays.mismatch(back, j + 1, block * d, ww, j + 1, block * d);
                                j = next < 0 ? -1 : j + 1 + next;
                            }
                            wb.put(i * d, mm, 0, block * d);
                        } else {
                            for (int j = 0; j < block * d; j++) { mm[j] = ww[j] - dd[j]; }
                            wb.put(i * d, mm, 0, block * d);
                        }
                    }
                }
                t[q] = System.nanoTime() - t0;
                w.assign(orig);
                t0 = System.nanoTime();
                ExactMerge.unmerge(ExactMerge.merge(w, false, a, b, 0.5));
                u[q] = System.nanoTime() - t0;
            }
            Arrays.sort(t); Arrays.sort(u);
            System.out.print(scratch.length() > 0 ? "" : "!"); System.out.printf("d=%d r=%d block %d rows: gemm-block pair %.2f ms | today's pair %.2f ms (misses/pair %d)%n",
                    d, r, block, t[reps / 2] / 1e6, u[reps / 2] / 1e6, misses / reps);
        }
    }
}
