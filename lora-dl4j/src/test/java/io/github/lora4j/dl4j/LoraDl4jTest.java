package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.optimize.listeners.CollectScoresListener;
import org.junit.jupiter.api.Test;
import org.nd4j.evaluation.classification.Evaluation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.MultiDataSet;
import org.nd4j.linalg.learning.config.Adam;

class LoraDl4jTest {

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();

    /** Bitwise copies of every parameter of every layer, by "index_key". */
    static Map<String, INDArray> params(MultiLayerNetwork net) {
        Map<String, INDArray> out = new java.util.LinkedHashMap<>();
        for (int i = 0; i < net.getnLayers(); i++) {
            for (Map.Entry<String, INDArray> e : net.getLayer(i).paramTable().entrySet()) {
                out.put(i + "_" + e.getKey(), e.getValue().dup());
            }
        }
        return out;
    }

    private static MultiLayerNetwork trainedBase() {
        MultiLayerNetwork base = Nets.mln(DataType.FLOAT, new Adam(0.01), 7);
        base.fit(Nets.task(DataType.FLOAT, 1, 2, 64)); // gives the base network an updater state
        return base;
    }

    @Test
    void applyGivesBitwiseTheBaseOutputAndLeavesTheGivenNetworkUnchanged() {
        MultiLayerNetwork base = trainedBase();
        INDArray params = base.params().dup();
        INDArray updater = base.getUpdater().getStateViewArray().dup();
        DataSet data = Nets.task(DataType.FLOAT, 1, 3, 32);
        INDArray expected = base.output(data.getFeatures());

        MultiLayerNetwork lora = LoraDl4j.apply(base, CONFIG, "layer0", "2");

        assertBitwise(expected, lora.output(data.getFeatures()), "LoRA output at init");
        assertBitwise(params, base.params(), "given network's parameters");
        assertBitwise(updater, base.getUpdater().getStateViewArray(), "given network's updater state");
        assertInstanceOf(LoraDenseLayerImpl.class, lora.getLayer(0));
        assertInstanceOf(LoraOutputLayerImpl.class, lora.getLayer(2));
        assertEquals(Map.of("W", List.of(6L, 10L), "b", List.of(10L), "loraA", List.of(2L, 6L),
                        "loraB", List.of(10L, 2L)), shapes(lora.getLayer(0).paramTable()),
                "layer0 parameter table");
        assertEquals(2 * (6 + 10) + 2 * (10 + 3), LoraDl4j.trainableParameterCount(lora));
        // Untargeted layer1 is frozen: a LoRA layer without adapter.
        assertEquals(List.of("W", "b"), new ArrayList<>(lora.getLayer(1).paramTable().keySet()));
    }

    private static Map<String, List<Long>> shapes(Map<String, INDArray> table) {
        Map<String, List<Long>> out = new java.util.HashMap<>();
        table.forEach((k, v) -> {
            List<Long> s = new ArrayList<>();
            for (long d : v.shape()) {
                s.add(d);
            }
            out.put(k, s);
        });
        return out;
    }

    @Test
    void fitTrainsOnlyLoraParametersWithDataSetIteratorAndMultiDataSet() {
        MultiLayerNetwork lora = LoraDl4j.apply(trainedBase(), CONFIG, Pattern.compile("layer[02]"));
        Map<String, INDArray> before = params(lora);
        CollectScoresListener scores = new CollectScoresListener(1);
        lora.setListeners(scores);
        DataSet data = Nets.task(DataType.FLOAT, 5, 6, 64);

        lora.fit(data);
        lora.fit(new ListDataSetIterator<>(data.asList(), 16));
        lora.fit(new MultiDataSet(data.getFeatures(), data.getLabels()));

        Map<String, INDArray> after = params(lora);
        for (String key : before.keySet()) {
            if (key.endsWith("_W") || key.endsWith("_b")) {
                assertBitwise(before.get(key), after.get(key), key + " after fit");
            } else {
                assertFalse(before.get(key).equals(after.get(key)), key + " should have been trained");
            }
        }
        assertEquals(1 + 4 + 1, scores.getListScore().size(), "listener called once per iteration");
        assertTrue(Double.isFinite(lora.score()), "score " + lora.score());
        Evaluation eval = lora.evaluate(new ListDataSetIterator<>(data.asList(), 32));
        assertTrue(eval.accuracy() >= 0 && eval.accuracy() <= 1, "accuracy " + eval.accuracy());
    }

    @Test
    void updaterStateHoldsLoraParametersAlone() {
        MultiLayerNetwork lora = LoraDl4j.apply(trainedBase(), CONFIG, "layer0", "layer1", "layer2");
        lora.fit(Nets.task(DataType.FLOAT, 5, 6, 16));
        long loraParams = 2 * (6 + 10) + 2 * (10 + 10) + 2 * (10 + 3);
        long expected = new Adam().stateSize(loraParams);
        assertEquals(2 * loraParams, expected, "Adam keeps two moments per parameter");
        assertEquals(expected, lora.getUpdater().getStateViewArray().length(),
                "updater state: Adam.stateSize(Σ r·(in + out))");
    }

    @Test
    void backwardWritesNoWeightOrBiasGradient() {
        MultiLayerNetwork lora = LoraDl4j.apply(trainedBase(), CONFIG, "layer0", "layer2");
        DataSet data = Nets.task(DataType.FLOAT, 5, 6, 16);
        lora.setInput(data.getFeatures());
        lora.setLabels(data.getLabels());
        lora.computeGradientAndScore();
        Gradient g = lora.gradient();
        for (String key : g.gradientForVariable().keySet()) {
            assertTrue(key.endsWith("_loraA") || key.endsWith("_loraB"), "unexpected gradient " + key);
        }
        assertEquals(4, g.gradientForVariable().size(), "loraA and loraB of two layers");
        for (int i = 0; i < lora.getnLayers(); i++) {
            INDArray flat = lora.getLayer(i).getGradientsViewArray();
            long frozen = Nets.snapshot(lora.getLayer(i).paramTable().get("W")).length()
                    + lora.getLayer(i).paramTable().get("b").length();
            assertEquals(0.0, flat.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(0, frozen))
                    .amaxNumber().doubleValue(), "layer " + i + ": the W and b gradient views stay zero");
        }
    }

    @Test
    void mergeAndUnmergeAreExactInPlace() {
        MultiLayerNetwork lora = LoraDl4j.apply(trainedBase(), CONFIG, "layer0", "layer2");
        lora.fit(Nets.task(DataType.FLOAT, 5, 6, 64));
        DataSet data = Nets.task(DataType.FLOAT, 5, 7, 32);
        INDArray unmerged = lora.output(data.getFeatures());
        Map<String, INDArray> before = params(lora);

        LoraDl4j.merge(lora);
        assertTrue(LoraDl4j.isMerged(lora));
        INDArray merged = lora.output(data.getFeatures());
        assertTrue(unmerged.equalsWithEps(merged, 1e-5), "merged output differs: " + unmerged.sub(merged).amaxNumber());
        assertFalse(before.get("0_W").equals(params(lora).get("0_W")), "merge changes W");
        IllegalStateException refused = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                () -> lora.fit(data));
        assertTrue(refused.getMessage().contains("unmerge"), refused.getMessage());

        LoraDl4j.unmerge(lora);
        Map<String, INDArray> after = params(lora);
        for (String key : before.keySet()) {
            assertBitwise(before.get(key), after.get(key), key + " after merge + unmerge");
        }
        assertBitwise(unmerged, lora.output(data.getFeatures()), "output after merge + unmerge");
    }

    @Test
    void mergeAndUnloadGivesPlainDl4jLayersWithTheSameOutputs() {
        MultiLayerNetwork lora = LoraDl4j.apply(trainedBase(), CONFIG, "layer0", "layer1", "layer2");
        lora.fit(Nets.task(DataType.FLOAT, 5, 6, 64));
        Map<String, INDArray> before = params(lora);
        DataSet data = Nets.task(DataType.FLOAT, 5, 7, 64);

        MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(lora);

        assertFalse(plain.getLayerWiseConfigurations().toJson().contains("io.github.lora4j"),
                "no lora4j class in the unloaded configuration");
        for (org.deeplearning4j.nn.api.Layer l : plain.getLayers()) {
            assertTrue(l.getClass().getName().startsWith("org.deeplearning4j."), l.getClass().getName());
        }
        INDArray expected = lora.output(data.getFeatures());
        INDArray actual = plain.output(data.getFeatures());
        assertTrue(expected.equalsWithEps(actual, 1e-5), "max difference " + expected.sub(actual).amaxNumber());
        assertBitwise(expected.argMax(1), actual.argMax(1), "predicted classes");
        Map<String, INDArray> after = params(lora);
        before.forEach((k, v) -> assertBitwise(v, after.get(k), k + " of the LoRA network after unload"));
    }

    @Test
    void cloneSummaryAndWorkspaceModeNoneWork() {
        MultiLayerNetwork lora = LoraDl4j.apply(trainedBase(), CONFIG, "layer0", "layer2");
        DataSet data = Nets.task(DataType.FLOAT, 5, 6, 32);
        lora.fit(data);
        MultiLayerNetwork copy = lora.clone();
        assertBitwise(lora.output(data.getFeatures()), copy.output(data.getFeatures()), "clone's output");
        String summary = lora.summary();
        assertTrue(summary.contains("LoraDenseLayerImpl") && summary.contains("loraA"), summary);

        copy.getLayerWiseConfigurations().setTrainingWorkspaceMode(org.deeplearning4j.nn.conf.WorkspaceMode.NONE);
        copy.getLayerWiseConfigurations().setInferenceWorkspaceMode(org.deeplearning4j.nn.conf.WorkspaceMode.NONE);
        INDArray w = copy.getLayer(0).getParam("W").dup();
        copy.fit(data);
        lora.fit(data);
        assertBitwise(lora.params(), copy.params(), "one step without workspaces equals one step with them");
        assertBitwise(w, copy.getLayer(0).getParam("W"), "W after fit without workspaces");
    }
}
