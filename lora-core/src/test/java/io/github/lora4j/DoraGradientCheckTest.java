package io.github.lora4j;

import static io.github.lora4j.TestData.gaussian;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * DoRA's analytic gradients against central finite differences of {@code L = sum(y ⊙ g)} in double, with and without
 * dropout (a fresh layer per evaluation, seeded alike, so every evaluation draws the same mask).
 *
 * <p>PEFT detaches the norm {@code ‖W + s·B·A‖}: its gradients for A and B are those of the output with
 * {@code c = m / ‖W + s·B·A‖} held at its current value. The differences for A and B are taken that way: each
 * perturbed evaluation sets {@code m' = m ⊙ ‖W + s·B'·A'‖ / ‖W + s·B·A‖}, so {@code c} stays what it was while the
 * direction {@code W + s·B'·A'} moves. For {@code m} and {@code x} nothing needs holding. L is then linear in each of
 * them, so the central difference has no truncation error; the tolerance covers rounding.
 */
class DoraGradientCheckTest {

    private static final double EPS = 1e-6;

    @Property(tries = 30)
    void gradientsMatchCentralDifferencesWithTheNormDetached(
            @ForAll @IntRange(min = 1, max = 6) int in, @ForAll @IntRange(min = 1, max = 6) int out,
            @ForAll @IntRange(min = 1, max = 3) int rank, @ForAll @IntRange(min = 1, max = 4) int n,
            @ForAll boolean rsLora, @ForAll boolean inOut, @ForAll boolean bias, @ForAll boolean dropout,
            @ForAll long seed) {
        int r = rank;   // also above min(in, out), as PEFT allows
        LoraConfig cfg = LoraConfig.builder().rank(r).alpha(3).rsLora(rsLora).dropout(dropout ? 0.3 : 0.0)
                .seed(seed).useDora(true).build();
        WeightLayout layout = inOut ? WeightLayout.IN_OUT : WeightLayout.OUT_IN;
        INDArray w = inOut ? gaussian(DataType.DOUBLE, seed, 1, in, out) : gaussian(DataType.DOUBLE, seed, 1, out, in);
        INDArray b = bias ? gaussian(DataType.DOUBLE, seed + 1, 1, out) : null;
        INDArray a = gaussian(DataType.DOUBLE, seed + 2, 1, r, in);
        INDArray bb = gaussian(DataType.DOUBLE, seed + 3, 0.5, out, r);
        INDArray m = gaussian(DataType.DOUBLE, seed + 6, 1, out).reshape(out).addi(2.5);
        INDArray x = gaussian(DataType.DOUBLE, seed + 4, 1, n, in);
        INDArray g = gaussian(DataType.DOUBLE, seed + 5, 1, n, out);
        Params p = new Params(w, b, cfg, layout, a, bb, m, x, g);

        LoraLinear l = p.layer(a, bb, m);
        l.forward(x);
        INDArray dx = l.backward(g);
        LoraAdapter ad = l.adapter("default");
        double[] norms0 = ad.dora().norms(w, layout, ad).clone();

        GradientCheckTest.checkAgainstDifferences("dL/dm", m, ad.gradMagnitude(), () -> p.loss(a, bb, m, x));
        GradientCheckTest.checkAgainstDifferences("dL/dx", x, dx, () -> p.loss(a, bb, m, x));
        GradientCheckTest.checkAgainstDifferences("dL/dA", a, ad.gradA(), () -> p.lossHoldingFactors(a, bb, m, norms0));
        GradientCheckTest.checkAgainstDifferences("dL/dB", bb, ad.gradB(), () -> p.lossHoldingFactors(a, bb, m, norms0));
    }

    /** One case's arrays; each loss builds a fresh training layer (the first dropout mask of its seed). */
    private record Params(INDArray w, INDArray bias, LoraConfig cfg, WeightLayout layout, INDArray a, INDArray b,
                          INDArray m, INDArray x, INDArray g) {

        LoraLinear layer(INDArray a, INDArray b, INDArray m) {
            LoraLinear l = LoraLinear.wrap(w, bias, cfg, layout);
            l.setAdapterWeights("default", a, b, m);
            return l.train();
        }

        double loss(INDArray a, INDArray b, INDArray m, INDArray x) {
            return layer(a, b, m).forward(x).mul(g).sumNumber().doubleValue();
        }

        /** The loss at {@code a}, {@code b} with {@code c = m / ‖W + s·B·A‖} held at its value for {@code norms0}. */
        double lossHoldingFactors(INDArray a, INDArray b, INDArray m, double[] norms0) {
            LoraLinear l = layer(a, b, m);
            LoraAdapter ad = l.adapter("default");
            double[] now = ad.dora().norms(w, layout, ad);
            double[] held = new double[now.length];
            for (int j = 0; j < held.length; j++) {
                held[j] = m.getDouble(j) * now[j] / norms0[j];
            }
            l.setAdapterWeights("default", a, b, Nd4j.createFromArray(held));
            return l.forward(x).mul(g).sumNumber().doubleValue();
        }
    }
}
