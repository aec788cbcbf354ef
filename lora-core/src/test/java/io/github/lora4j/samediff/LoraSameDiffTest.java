package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.TestData.maxAbsDiff;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;

class LoraSameDiffTest {

    private static final int IN = 10;
    private static final int OUT = 6;
    private static final int N = 16;
    private static final LoraConfig CFG = LoraConfig.builder().rank(3).alpha(6).seed(17).build();

    /** Sets non-zero A and B in the graph and in a matching eager layer. */
    private static void setAdapter(SameDiff sd, LoraSameDiff layer, INDArray a, INDArray b) {
        sd.getArrForVarName(layer.loraA().name()).assign(a);
        sd.getArrForVarName(layer.loraB().name()).assign(b);
    }

    @Test
    void startsFromTheSameAAsLoraLinearAndComputesTheBaseLayer() {
        INDArray w = gaussian(DataType.DOUBLE, 1, 0.5, OUT, IN);
        INDArray bias = gaussian(DataType.DOUBLE, 2, 0.5, OUT);
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
        LoraSameDiff layer = LoraSameDiff.linear(sd, "q_proj", x, w, bias, CFG);
        LoraLinear eager = LoraLinear.wrap(w, bias, CFG);
        assertArrayEquals(bits(eager.loraA("default")), bits(layer.currentA()), "same seed, same A");
        assertEquals(0.0, layer.currentB().amaxNumber().doubleValue());
        INDArray xs = gaussian(DataType.DOUBLE, 3, 1, N, IN);
        INDArray y = sd.output(Map.of("x", xs), "q_proj").get("q_proj");
        assertTrue(maxAbsDiff(y, xs.mmul(w.transpose()).addRowVector(bias)) < 1e-12);
        assertEquals(VariableType.CONSTANT, layer.weight().getVariableType());
        assertEquals(VariableType.CONSTANT, layer.bias().getVariableType());
        assertEquals(VariableType.VARIABLE, layer.loraA().getVariableType());
        assertEquals(VariableType.VARIABLE, layer.loraB().getVariableType());
    }

    @Test
    void outputsAndAdapterGradientsMatchLoraLinearAndWGetsNone() {
        for (WeightLayout layout : WeightLayout.values()) {
            INDArray wOutIn = gaussian(DataType.DOUBLE, 10, 0.5, OUT, IN);
            INDArray w = layout == WeightLayout.OUT_IN ? wOutIn : wOutIn.transpose().dup('c');
            INDArray bias = gaussian(DataType.DOUBLE, 11, 0.5, OUT);
            INDArray a = gaussian(DataType.DOUBLE, 12, 0.5, 3, IN);
            INDArray b = gaussian(DataType.DOUBLE, 13, 0.5, OUT, 3);
            INDArray xs = gaussian(DataType.DOUBLE, 14, 1, N, IN);
            INDArray g = gaussian(DataType.DOUBLE, 15, 1, N, OUT);

            SameDiff sd = SameDiff.create();
            SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
            LoraSameDiff layer = LoraSameDiff.linear(sd, "v_proj", x, w, bias, CFG, layout);
            setAdapter(sd, layer, a, b);
            // L = Σ y ⊙ G, so dL/dy = G: the same upstream gradient LoraLinear.backward receives
            SDVariable loss = layer.output().mul(sd.constant("g", g)).sum("loss");
            sd.setLossVariables(loss);

            LoraLinear eager = LoraLinear.wrap(w.dup(), bias.dup(), CFG, layout);
            eager.setAdapterWeights("default", a, b);
            eager.train();
            INDArray yEager = eager.forward(xs);
            eager.backward(g);

            INDArray ySd = sd.output(Map.of("x", xs), "v_proj").get("v_proj");
            assertTrue(maxAbsDiff(ySd, yEager) < 1e-12, layout + ": outputs differ by " + maxAbsDiff(ySd, yEager));

            Map<String, INDArray> grads = sd.calculateGradients(Map.of("x", xs), "v_proj/lora_A", "v_proj/lora_B");
            assertTrue(maxAbsDiff(grads.get("v_proj/lora_A"), eager.adapter("default").gradA()) < 1e-10, layout + ": dA");
            assertTrue(maxAbsDiff(grads.get("v_proj/lora_B"), eager.adapter("default").gradB()) < 1e-10, layout + ": dB");
            assertNull(layer.weight().getGradient(), layout + ": a constant has no gradient variable");
            assertFalse(sd.calculateGradients(Map.of("x", xs), "v_proj/lora_A").containsKey("v_proj/weight"));
        }
    }

    @Test
    void fitWithAdamLowersTheMseAndLeavesWBitwiseUnchanged() {
        INDArray w = gaussian(DataType.DOUBLE, 20, 0.5, OUT, IN);
        INDArray bias = gaussian(DataType.DOUBLE, 21, 0.1, OUT);
        INDArray wCopy = w.dup();
        // target: the base layer plus a rank-2 change, which a rank-3 adapter can represent
        INDArray delta = gaussian(DataType.DOUBLE, 22, 0.3, OUT, 2).mmul(gaussian(DataType.DOUBLE, 23, 0.3, 2, IN));
        INDArray xs = gaussian(DataType.DOUBLE, 24, 1, 64, IN);
        INDArray target = xs.mmul(w.add(delta).transpose()).addRowVector(bias);

        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
        SDVariable label = sd.placeHolder("label", DataType.DOUBLE, -1, OUT);
        LoraSameDiff layer = LoraSameDiff.linear(sd, "o_proj", x, w, bias, CFG);
        sd.loss.meanSquaredError("loss", label, layer.output(), null);
        sd.setLossVariables("loss");
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Adam(0.02))
                .dataSetFeatureMapping("x").dataSetLabelMapping("label").build());

        double[] loss = Graphs.lossBeforeAndAfterFit(sd, xs, target, 300);
        assertTrue(loss[1] < 0.05 * loss[0], "MSE " + loss[0] + " -> " + loss[1]);

        assertArrayEquals(bits(wCopy), bits(w), "the caller's W is unchanged");
        assertArrayEquals(bits(wCopy), bits(sd.getArrForVarName("o_proj/weight")), "the graph's constant is unchanged");

        // the trained adapter moves into an eager layer and computes what the graph computes
        LoraLinear trained = layer.toLoraLinear();
        INDArray yGraph = sd.output(Map.of("x", xs), "o_proj").get("o_proj");
        assertTrue(maxAbsDiff(trained.forward(xs), yGraph) < 1e-12);
        assertTrue(layer.currentB().amaxNumber().doubleValue() > 0, "B was trained");
    }

    @Test
    void badInputIsRefusedAndTheGraphUnchanged() {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.FLOAT, -1, IN);
        INDArray w = gaussian(DataType.DOUBLE, 30, 0.5, OUT, IN);
        IllegalArgumentException type = assertThrows(IllegalArgumentException.class,
                () -> LoraSameDiff.linear(sd, "l", x, w, null, CFG));
        assertTrue(type.getMessage().contains("expected DOUBLE") && type.getMessage().contains("got FLOAT"), type.getMessage());
        SDVariable xd = sd.placeHolder("xd", DataType.DOUBLE, -1, IN + 1);
        IllegalArgumentException width = assertThrows(IllegalArgumentException.class,
                () -> LoraSameDiff.linear(sd, "l", xd, w, null, CFG));
        assertTrue(width.getMessage().contains("expected [n, " + IN + "]"), width.getMessage());
        assertEquals(2, sd.variables().size(), "only the two placeholders");
        SDVariable ok = sd.placeHolder("ok", DataType.DOUBLE, -1, IN);
        sd.constant("l/lora_dropped", w);                  // a user's variable named like the LoRA dropout's
        IllegalArgumentException dropoutName = assertThrows(IllegalArgumentException.class,
                () -> LoraSameDiff.linear(sd, "l", ok, w, null, CFG.toBuilder().dropout(0.1).build()));
        assertTrue(dropoutName.getMessage().contains("'l/lora_dropped' already exists"), dropoutName.getMessage());
        assertEquals(4, sd.variables().size(), "three placeholders and the user's constant: nothing added");
        GraphSurgery.removeVariable(sd, "l/lora_dropped");
        LoraSameDiff.linear(sd, "l", ok, w, null, CFG);
        IllegalArgumentException taken = assertThrows(IllegalArgumentException.class,
                () -> LoraSameDiff.linear(sd, "l", ok, w, null, CFG));
        assertTrue(taken.getMessage().contains("'l' already exists"), taken.getMessage());
    }

    @Test
    void blankNamesAndOpOutputNamesAreRefusedAndTheGraphUnchanged() {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
        INDArray w = gaussian(DataType.DOUBLE, 40, 0.5, OUT, IN);
        Graphs.Snapshot before = Graphs.snapshot(sd);
        for (String bad : new String[] {"", " ", "a:1"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> LoraSameDiff.linear(sd, bad, x, w, null, CFG));
            assertTrue(e.getMessage().contains("without ':'") && e.getMessage().contains("got '" + bad + "'"),
                    e.getMessage());
            assertEquals(before, Graphs.snapshot(sd), "'" + bad + "' changed the graph");
        }
    }

    /**
     * The graph shares the caller's W (no copy): merging goes through the graph's handle, which bypasses the graph's
     * LoRA path meanwhile; a LoraLinear from toLoraLinear() holds a copy, and a layer over the shared W is refused.
     * In every case the adapter is applied exactly once.
     */
    @Test
    void theGraphSharesWAndNoCallAppliesTheAdapterTwice() {
        INDArray w = gaussian(DataType.DOUBLE, 50, 0.5, OUT, IN).dup('c');      // not a view: SameDiff copies views
        assertFalse(w.isView());
        INDArray bias = gaussian(DataType.DOUBLE, 51, 0.5, OUT);
        INDArray wCopy = w.dup();
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
        LoraSameDiff q = LoraSameDiff.linear(sd, "q", x, w, bias, CFG);
        assertSame(w, sd.getArrForVarName("q/weight"), "shared, as documented");
        INDArray a = gaussian(DataType.DOUBLE, 52, 0.5, 3, IN);
        INDArray b = gaussian(DataType.DOUBLE, 53, 0.5, OUT, 3);
        setAdapter(sd, q, a, b);
        INDArray xs = gaussian(DataType.DOUBLE, 54, 1, N, IN);
        LoraLinear eager = LoraLinear.wrap(wCopy.dup(), bias, CFG);
        eager.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a, b);
        INDArray once = eager.forward(xs);
        INDArray y = sd.output(Map.of("x", xs), "q").get("q");
        assertTrue(maxAbsDiff(once, y) < 1e-12);

        LoraLinear copy = q.toLoraLinear();
        copy.merge();                                   // the case: it moved the graph's output by 0.715
        assertArrayEquals(bits(wCopy), bits(w), "toLoraLinear() merges a copy of W");
        assertArrayEquals(bits(y), bits(sd.output(Map.of("x", xs), "q").get("q")), "the graph is untouched");
        assertTrue(maxAbsDiff(once, copy.forward(xs)) < 1e-12, "the merged copy applies the adapter once");

        LoraLinear overShared = LoraLinear.wrap(w, bias, CFG);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> q.exportTo(overShared, LoraLinear.DEFAULT_ADAPTER));
        assertTrue(e.getMessage().contains("apply the adapter twice"), e.getMessage());

        q.merge();
        assertFalse(maxAbsDiff(wCopy, w) == 0, "merge writes the shared W in place");
        assertTrue(maxAbsDiff(once, sd.output(Map.of("x", xs), "q").get("q")) < 1e-12,
                "while merged the graph bypasses its LoRA path: applied once");
        assertThrows(IllegalStateException.class, q::merge);
        assertThrows(IllegalStateException.class, q::toLoraLinear);
        q.unmerge();
        assertArrayEquals(bits(wCopy), bits(w), "unmerge restores W bitwise");
        assertArrayEquals(bits(y), bits(sd.output(Map.of("x", xs), "q").get("q")));

        // A view is the one case where the graph holds a copy (SameDiff's constant() copies views): merging then
        // writes the graph's copy and leaves the caller's view alone.
        INDArray wide = gaussian(DataType.DOUBLE, 55, 0.5, OUT, 2 * IN);
        INDArray view = wide.get(NDArrayIndex.all(),
                NDArrayIndex.interval(0, IN));
        INDArray viewCopy = view.dup();
        LoraSameDiff v = LoraSameDiff.linear(sd, "v", x, view, null, CFG);
        assertFalse(sd.getArrForVarName("v/weight") == view);
        setAdapter(sd, v, a, b);
        LoraLinear eagerV = LoraLinear.wrap(viewCopy.dup(), null, CFG);
        eagerV.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a, b);
        assertEquals("v", v.output().name());
        assertTrue(maxAbsDiff(eagerV.forward(xs), sd.output(Map.of("x", xs), "v").get("v")) < 1e-12,
                "a layer without bias outputs the LoRA sum under its name");
        v.merge();
        assertArrayEquals(bits(viewCopy), bits(view));
        assertFalse(maxAbsDiff(viewCopy, sd.getArrForVarName("v/weight")) == 0);
        v.unmerge();
    }
}
