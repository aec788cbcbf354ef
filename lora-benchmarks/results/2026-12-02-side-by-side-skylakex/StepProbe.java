// One-off probe behind this folder's README (package io.github.lora4j: it calls package-private pieces). Run from
// the project root after `mvn -DskipTests package`:
//   javac -cp lora-core/target/classes:lora-benchmarks/target/benchmarks.jar -d /tmp/probe lora-benchmarks/results/2026-12-02-side-by-side-skylakex/StepProbe.java
//   java -cp /tmp/probe:lora-core/target/classes:lora-benchmarks/target/benchmarks.jar io.github.lora4j.StepProbe ARGS
package io.github.lora4j;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.api.buffer.DataType;
import org.bytedeco.javacpp.FloatPointer;
import static org.bytedeco.openblas.global.openblas_nolapack.*;
/** Times each part of one training step in place, in the order a step runs them. */
public class StepProbe {
  public static void main(String[] args) {
    int d = Integer.parseInt(args[0]), r = Integer.parseInt(args[1]), n = Integer.parseInt(args[2]), it = Integer.parseInt(args[3]);
    INDArray w = Nd4j.rand(DataType.FLOAT, d, d).subi(0.5), x = Nd4j.rand(DataType.FLOAT, n, d), g = Nd4j.rand(DataType.FLOAT, n, d);
    INDArray dx = Nd4j.create(DataType.FLOAT, n, d);
    LoraLinear layer = LoraLinear.wrap(w.dup(), Nd4j.zeros(DataType.FLOAT, d), LoraConfig.builder().rank(r).alpha(2 * r).build());
    layer.train();
    FloatPointer pw = new FloatPointer(w.data().addressPointer()), pg = new FloatPointer(g.data().addressPointer()), pdx = new FloatPointer(dx.data().addressPointer());
    for (int round = 0; round < 3; round++) {
      long[] f = new long[it], bx = new long[it], z = new long[it], f2 = new long[it], b0 = new long[it], z2 = new long[it], raw = new long[it];
      for (int i = 0; i < it; i++) {
        long t0 = System.nanoTime(); layer.forward(x); long t1 = System.nanoTime(); layer.backward(g, true); long t2 = System.nanoTime(); layer.zeroGrad(); long t3 = System.nanoTime();
        layer.forward(x); long t4 = System.nanoTime(); layer.backward(g, false); long t5 = System.nanoTime(); layer.zeroGrad(); long t6 = System.nanoTime();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, d, 1f, pg, d, pw, d, 0f, pdx, d); long t7 = System.nanoTime();
        f[i] = t1 - t0; bx[i] = t2 - t1; z[i] = t3 - t2; f2[i] = t4 - t3; b0[i] = t5 - t4; z2[i] = t6 - t5; raw[i] = t7 - t6;
      }
      System.out.printf("d=%d r=%d n=%d ms: forward %.3f | backward(dx) %.3f | zeroGrad %.3f || forward %.3f | backward(no dx) %.3f | zeroGrad %.3f || raw g.W sgemm %.3f%n",
          d, r, n, m(f), m(bx), m(z), m(f2), m(b0), m(z2), m(raw));
    }
  }
  static double m(long[] t) { long[] c = t.clone(); java.util.Arrays.sort(c); return c[c.length / 2] / 1e6; }
}
