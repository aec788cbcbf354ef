package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.TestData.maxAbsDiff;
import static io.github.lora4j.samediff.LoraSameDiffApplyTest.CFG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.internal.SameDiffOp;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Every way mmul can read a weight (operand order and transpose flags), each against {@link LoraLinear}. */
class LoraSameDiffMmulFormsTest {

    private static final int IN = 6;
    private static final int OUT = 4;
    private static final int N = 5;

    /** A product of x {@code [n, in]} and W, and how it lays out W and its result. */
    enum Form {
        X_WT(WeightLayout.OUT_IN, false),       // mmul(x, W, tB)          [n, out]
        X_W(WeightLayout.IN_OUT, false),        // mmul(x, W)              W [in, out]
        XT_WT(WeightLayout.OUT_IN, false),      // mmul(xᵀ, W, tA, tB)     x fed as [in, n]
        X_WT_TRANSPOSED(WeightLayout.OUT_IN, true),   // mmul(x, W, tB, tR)   [out, n]
        W_XT(WeightLayout.OUT_IN, true),        // mmul(W, x, tB)          [out, n]
        WT_XT(WeightLayout.IN_OUT, true);       // mmul(W, x, tA, tB)      W [in, out], [out, n]

        final WeightLayout layout;
        final boolean transposedResult;

        Form(WeightLayout layout, boolean transposedResult) {
            this.layout = layout;
            this.transposedResult = transposedResult;
        }

        SDVariable product(SameDiff sd, SDVariable x, SDVariable w) {
            return switch (this) {
                case X_WT -> sd.mmul("y", x, w, false, true, false);
                case X_W -> sd.mmul("y", x, w, false, false, false);
                case XT_WT -> sd.mmul("y", x, w, true, true, false);
                case X_WT_TRANSPOSED -> sd.mmul("y", x, w, false, true, true);
                case W_XT -> sd.mmul("y", w, x, false, true, false);
                case WT_XT -> sd.mmul("y", w, x, true, true, false);
            };
        }

        INDArray feed(INDArray x) {
            return this == XT_WT ? x.transpose().dup('c') : x;
        }
    }

    @ParameterizedTest
    @EnumSource(Form.class)
    void eachFormComputesLoraLinearsOutputAndGradients(Form form) {
        INDArray wOutIn = gaussian(DataType.DOUBLE, 1, 0.5, OUT, IN);
        INDArray w = form.layout == WeightLayout.OUT_IN ? wOutIn : wOutIn.transpose().dup('c');
        INDArray x = gaussian(DataType.DOUBLE, 2, 1, N, IN);
        INDArray g = gaussian(DataType.DOUBLE, 3, 1, N, OUT);
        SameDiff sd = SameDiff.create();
        SDVariable xv = sd.placeHolder("x", DataType.DOUBLE, form.feed(x).shape());
        SDVariable y = form.product(sd, xv, sd.var("W", w));
        INDArray gForm = form.transposedResult ? g.transpose().dup('c') : g;
        y.mul(sd.constant("G", gForm)).sum("probe");
        sd.setLossVariables("probe");

        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, "W");
        LoraSameDiff a = lora.adapter("W");
        assertEquals(form.layout, a.layout());
        LoraSameDiffApplyTest.randomAdapter(sd, a, 4);
        LoraLinear eager = LoraLinear.wrap(w.dup(), null, CFG, form.layout);
        eager.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a.currentA(), a.currentB());
        eager.train();
        INDArray expected = eager.forward(x);
        eager.backward(g);

        Map<String, INDArray> feed = Map.of("x", form.feed(x));
        INDArray out = sd.output(feed, "y").get("y");
        INDArray actual = form.transposedResult ? out.transpose() : out;
        assertTrue(maxAbsDiff(expected, actual) < 1e-12, form + ": output differs by " + maxAbsDiff(expected, actual));
        Map<String, INDArray> grads = sd.calculateGradients(feed, "W/lora_A", "W/lora_B");
        double dA = maxAbsDiff(grads.get("W/lora_A"), eager.adapter(LoraLinear.DEFAULT_ADAPTER).gradA());
        double dB = maxAbsDiff(grads.get("W/lora_B"), eager.adapter(LoraLinear.DEFAULT_ADAPTER).gradB());
        assertTrue(dA < 1e-12 && dB < 1e-12, form + ": dA differs by " + dA + ", dB by " + dB);
        System.out.printf("samediff mmul form %s vs LoraLinear: output %.3g, dA %.3g, dB %.3g%n", form,
                maxAbsDiff(expected, actual), dA, dB);
    }

    /** The LoRA path is two thin products, a scaling and an add: no new op reads W, none forms W + s·B·A. */
    @Test
    void theLoraPathIsTwoThinProductsBesideTheFrozenOneForEveryOpThatReadsW() {
        SameDiff sd = SameDiff.create();
        SDVariable x1 = sd.placeHolder("x1", DataType.FLOAT, -1, IN);
        SDVariable x2 = sd.placeHolder("x2", DataType.FLOAT, -1, IN);
        SDVariable w = sd.var("tied/weight", gaussian(DataType.FLOAT, 5, 0.5, OUT, IN));
        sd.mmul("y1", x1, w, false, true, false);
        sd.mmul("y2", x2, w, false, true, false);
        Set<String> before = new HashSet<>(sd.getOps().keySet());
        LoraSameDiff a = LoraSameDiff.apply(sd, CFG, "tied").adapter("tied/weight");
        assertEquals(2, a.adaptedOps().size(), "both products that read the tied W");
        List<String> added = sd.getOps().keySet().stream().filter(o -> !before.contains(o)).sorted().toList();
        assertEquals(8, added.size(), "4 ops per adapted product: " + added);
        LoraSameDiffApplyTest.randomAdapter(sd, a, 6);
        INDArray in1 = gaussian(DataType.FLOAT, 7, 1, N, IN);
        INDArray in2 = gaussian(DataType.FLOAT, 8, 1, N, IN);
        List<String> outs = new ArrayList<>();
        for (String op : added) {
            SameDiffOp o = sd.getOps().get(op);
            assertTrue(!o.getInputsToOp().contains("tied/weight"), op + " reads W");
            outs.addAll(o.getOutputsOfOp());
        }
        Map<String, INDArray> values = sd.output(Map.of("x1", in1, "x2", in2), outs.toArray(new String[0]));
        for (Map.Entry<String, INDArray> e : values.entrySet()) {
            long[] shape = e.getValue().shape();
            assertTrue(shape.length == 2 && shape[0] == N && (shape[1] == CFG.rank() || shape[1] == OUT),
                    e.getKey() + " is " + Arrays.toString(shape) + ", expected [n, r] or [n, out]");
        }
        LoraLinear eager = LoraLinear.wrap(sd.getArrForVarName("tied/weight").dup(), null, CFG);
        eager.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a.currentA(), a.currentB());
        assertTrue(maxAbsDiff(eager.forward(in1), values.get("y1")) < 1e-5, "y1 in float");
        assertTrue(maxAbsDiff(eager.forward(in2), values.get("y2")) < 1e-5, "y2 in float");
    }
}
