package io.github.lora4j;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Analytic gradients against central finite differences of {@code L = sum(y ⊙ g)} in double precision.
 * L is linear in each of A, B and x separately, so the central difference has no truncation error; the
 * tolerance covers rounding only. {@link #checkAgainstDifferences} is public for the other packages' gradient checks.
 */
public class GradientCheckTest {

    private static final double EPS = 1e-6;

    @Property(tries = 25)
    void gradientsMatchCentralDifferences(@ForAll @IntRange(min = 1, max = 7) int in, @ForAll @IntRange(min = 1, max = 7) int out,
                                          @ForAll @IntRange(min = 1, max = 4) int rank, @ForAll @IntRange(min = 1, max = 4) int n,
                                          @ForAll boolean rsLora, @ForAll boolean inOut, @ForAll long seed) {
        int r = rank;   // also above min(in, out), as PEFT allows
        LoraConfig cfg = LoraConfig.builder().rank(r).alpha(3).rsLora(rsLora).build();
        WeightLayout layout = inOut ? WeightLayout.IN_OUT : WeightLayout.OUT_IN;
        INDArray w = inOut ? gaussian(DataType.DOUBLE, seed, 1, in, out) : gaussian(DataType.DOUBLE, seed, 1, out, in);
        LoraLinear l = LoraLinear.wrap(w, gaussian(DataType.DOUBLE, seed + 1, 1, out), cfg, layout);
        l.setAdapterWeights("default", gaussian(DataType.DOUBLE, seed + 2, 1, r, in), gaussian(DataType.DOUBLE, seed + 3, 1, out, r));
        checkLayer(l, gaussian(DataType.DOUBLE, seed + 4, 1, n, in), gaussian(DataType.DOUBLE, seed + 5, 1, n, out));
    }

    /** The active adapter's dL/dA, dL/dB and dL/dx for {@code L = sum(y ⊙ g)} against central differences. */
    static void checkLayer(LoraLinear l, INDArray x, INDArray g) {
        l.train();
        l.forward(x);
        INDArray dx = l.backward(g);
        LoraAdapter ad = l.adapter("default");
        INDArray gradA = ad.gradA().dup();
        INDArray gradB = ad.gradB().dup();
        l.eval();

        checkAgainstDifferences("dL/dA", ad.a(), gradA, () -> loss(l, x, g));
        checkAgainstDifferences("dL/dB", ad.b(), gradB, () -> loss(l, x, g));
        checkAgainstDifferences("dL/dx", x, dx, () -> loss(l, x, g));
    }

    private static double loss(LoraLinear l, INDArray x, INDArray g) {
        return l.forward(x).mul(g).sumNumber().doubleValue();
    }

    public static void checkAgainstDifferences(String what, INDArray param, INDArray analytic,
                                                java.util.function.DoubleSupplier loss) {
        INDArray flat = param.reshape(param.length());
        INDArray an = analytic.dup('c').reshape(analytic.length());
        for (long i = 0; i < flat.length(); i++) {
            double v = flat.getDouble(i);
            flat.putScalar(i, v + EPS);
            double up = loss.getAsDouble();
            flat.putScalar(i, v - EPS);
            double down = loss.getAsDouble();
            flat.putScalar(i, v);
            double numeric = (up - down) / (2 * EPS);
            double err = Math.abs(numeric - an.getDouble(i)) / Math.max(1.0, Math.abs(numeric));
            assertTrue(err < 1e-7, what + "[" + i + "]: analytic " + an.getDouble(i) + ", numeric " + numeric);
        }
    }
}
