// One-off probe behind this folder's README (package io.github.lora4j: it calls package-private pieces). Run from
// the project root after `mvn -DskipTests package`:
//   javac -cp lora-core/target/classes:lora-benchmarks/target/benchmarks.jar -d /tmp/probe lora-benchmarks/results/2026-12-02-side-by-side-skylakex/FastProbe.java
//   java -cp /tmp/probe:lora-core/target/classes:lora-benchmarks/target/benchmarks.jar io.github.lora4j.FastProbe ARGS
package io.github.lora4j;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.api.buffer.DataType;
import org.bytedeco.javacpp.FloatPointer;
import static org.bytedeco.openblas.global.openblas_nolapack.*;
public class FastProbe {
  static double med(Runnable r, int it) { long[] t = new long[it]; for (int i = 0; i < it; i++) { long a = System.nanoTime(); r.run(); t[i] = System.nanoTime() - a; } java.util.Arrays.sort(t); return t[it/2] / 1e3; }
  public static void main(String[] args) {
    int d = Integer.parseInt(args[0]), r = Integer.parseInt(args[1]), it = Integer.parseInt(args[2]);
    INDArray w = Nd4j.rand(DataType.FLOAT, d, d).subi(0.5);
    LoraLinear layer = LoraLinear.wrap(w.dup(), null, LoraConfig.builder().rank(r).alpha(2 * r).build());
    LoraAdapter ad = layer.adapter(LoraLinear.DEFAULT_ADAPTER);
    ad.b().assign(Nd4j.rand(DataType.FLOAT, d, r).subi(0.5).muli(0.01));
    INDArray A = ad.a(), B = ad.b();
    FloatPointer pw = new FloatPointer(w.data().addressPointer()), pa = new FloatPointer(A.data().addressPointer()), pb = new FloatPointer(B.data().addressPointer());
    for (int round = 0; round < 3; round++) {
      double pair = med(() -> { layer.merge(MergeMode.FAST); layer.unmerge(); }, it);
      double gemms = med(() -> { cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, r, 2f, pb, r, pa, d, 1f, pw, d);
                                 cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, r, -2f, pb, r, pa, d, 1f, pw, d); }, it);
      double kern = med(() -> { Merge.deltaInto(w, WeightLayout.OUT_IN, ad, 2.0); Merge.deltaInto(w, WeightLayout.OUT_IN, ad, -2.0); }, it);
      double scans = med(() -> { Checks.maxAbsOrNaN(A); Checks.maxAbsOrNaN(B); }, it);
      System.out.printf("d=%d r=%d: merge+unmerge FAST %.1f us | 2 raw cblas %.1f us | 2 Kernels.gemm %.1f us | A,B scans %.1f us%n", d, r, pair, gemms, kern, scans);
    }
  }
}
