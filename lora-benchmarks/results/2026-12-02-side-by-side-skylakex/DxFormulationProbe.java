// One-off probe behind README item 2: dx = g·W as NoTrans·NoTrans sgemm, against dxᵀ = Wᵀ·gᵀ (Trans·Trans) plus a
// Java transpose into dx. Median of 40 calls, 3 rounds. Run from the project root after `mvn -DskipTests package`:
//   javac -cp lora-benchmarks/target/benchmarks.jar -d /tmp DxFormulationProbe.java
//   java -cp lora-benchmarks/target/benchmarks.jar:/tmp DxFormulationProbe 4096 8
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.api.buffer.DataType;
import org.bytedeco.javacpp.FloatPointer;
import static org.bytedeco.openblas.global.openblas_nolapack.*;
public class DxFormulationProbe {
  public static void main(String[] a) {
    int d = Integer.parseInt(a[0]), n = Integer.parseInt(a[1]);
    INDArray w = Nd4j.rand(DataType.FLOAT, d, d), g = Nd4j.rand(DataType.FLOAT, n, d);
    INDArray dx = Nd4j.create(DataType.FLOAT, n, d), dxt = Nd4j.create(DataType.FLOAT, d, n), dx2 = Nd4j.create(DataType.FLOAT, n, d);
    FloatPointer pw = new FloatPointer(w.data().addressPointer()), pg = new FloatPointer(g.data().addressPointer());
    FloatPointer pdx = new FloatPointer(dx.data().addressPointer()), pdxt = new FloatPointer(dxt.data().addressPointer());
    float[] buf = new float[d*n]; float[] out = new float[d*n];
    java.nio.FloatBuffer tb = dxt.data().asNioFloat(), ob = dx2.data().asNioFloat();
    for (int round = 0; round < 3; round++) {
      long[] nn = new long[40], tt = new long[40];
      for (int it = 0; it < 40; it++) {
        long t0 = System.nanoTime();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, d, 1f, pg, d, pw, d, 0f, pdx, d);
        long t1 = System.nanoTime();
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, d, n, d, 1f, pw, d, pg, d, 0f, pdxt, n);
        tb.get(0, buf); for (int j = 0; j < d; j++) for (int i = 0; i < n; i++) out[i*d+j] = buf[j*n+i]; ob.put(0, out);
        long t2 = System.nanoTime();
        nn[it] = t1 - t0; tt[it] = t2 - t1;
      }
      java.util.Arrays.sort(nn); java.util.Arrays.sort(tt);
      System.out.printf("d=%d n=%d NN %.3f ms  TT+transpose %.3f ms  maxdiff %g%n", d, n, nn[20]/1e6, tt[20]/1e6, dx.sub(dx2).amaxNumber().doubleValue());
    }
  }
}
