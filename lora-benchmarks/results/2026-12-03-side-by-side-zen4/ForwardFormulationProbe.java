package io.github.lora4j;

import java.util.Arrays;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** y = x·Wᵀ for n = 8 as today (kernel: W as A, Trans) against yᵀ = W·xᵀ (kernel: W as B, NoTrans) + transpose. */
public class ForwardFormulationProbe {
    interface Body { void run(); }
    static double ms(Body b, int reps) {
        long[] t = new long[reps];
        for (int i = 0; i < reps; i++) { long t0 = System.nanoTime(); b.run(); t[i] = System.nanoTime() - t0; }
        Arrays.sort(t); return t[reps / 2] / 1e6;
    }
    public static void main(String[] args) {
        int d = Integer.parseInt(args[0]); int n = Integer.parseInt(args[1]); int reps = Integer.parseInt(args[2]);
        INDArray w = Nd4j.rand(DataType.FLOAT, d, d);
        INDArray x = Nd4j.rand(DataType.FLOAT, n, d);
        INDArray y = Nd4j.create(DataType.FLOAT, n, d);
        INDArray yt = Nd4j.create(DataType.FLOAT, d, n);
        FloatPointer wp = new FloatPointer(w.data().addressPointer());
        FloatPointer xp = new FloatPointer(x.data().addressPointer());
        FloatPointer yp = new FloatPointer(y.data().addressPointer());
        FloatPointer ytp = new FloatPointer(yt.data().addressPointer());
        float[] t = new float[d * n];
        float[] u = new float[d * n];
        for (int round = 0; round < 3; round++) {
            double today = ms(() -> openblas_nolapack.cblas_sgemm(101, 111, 112, n, d, d, 1f, xp, d, wp, d, 0f, yp, d), reps);
            double flipped = ms(() -> openblas_nolapack.cblas_sgemm(101, 111, 112, d, n, d, 1f, wp, d, xp, d, 0f, ytp, n), reps);
            double transpose = ms(() -> {
                ytp.position(0).get(t);
                for (int i = 0; i < d; i++) for (int j = 0; j < n; j++) u[j * d + i] = t[i * n + j];
                yp.position(0).put(u);
            }, reps);
            System.out.printf("d=%d n=%d: x·Wᵀ %.3f ms | W·xᵀ %.3f ms + transpose %.3f ms%n", d, n, today, flipped, transpose);
        }
        openblas_nolapack.cblas_sgemm(101, 111, 112, n, d, d, 1f, xp, d, wp, d, 0f, yp, d);
        openblas_nolapack.cblas_sgemm(101, 111, 112, d, n, d, 1f, wp, d, xp, d, 0f, ytp, n);
        System.out.println("same bits: " + y.equals(yt.transpose()) + ", max diff " + y.sub(yt.transpose()).amaxNumber());
    }
}
