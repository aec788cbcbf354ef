package io.github.lora4j.dl4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import java.util.HashSet;
import java.util.Set;
import org.deeplearning4j.gradientcheck.GradientCheckUtil;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.NoOp;

/** Gradients of LoRA networks in double: DL4J's GradientCheckUtil, and a central-difference check of our own. */
class LoraDl4jGradientTest {

    /** GAUSSIAN init and then a random B, so that every gradient path (through B and A) is non-trivial. */
    private static final LoraConfig CONFIG = LoraConfig.builder().rank(3).alpha(6).init(LoraInit.GAUSSIAN).build();

    static void randomizeB(org.deeplearning4j.nn.api.Layer[] layers) {
        int seed = 11;
        for (org.deeplearning4j.nn.api.Layer l : layers) {
            INDArray b = l.paramTable().get(LoraParamInitializer.LORA_B_KEY);
            if (b != null) {
                b.assign(Nets.gaussian(seed++, b.rows(), b.columns()).muli(0.3));
            }
        }
    }

    private static Set<String> frozenKeys(org.deeplearning4j.nn.api.Layer[] layers, boolean byIndex) {
        Set<String> out = new HashSet<>();
        for (org.deeplearning4j.nn.api.Layer l : layers) {
            String prefix = byIndex ? String.valueOf(l.getIndex()) : l.conf().getLayer().getLayerName();
            out.add(prefix + "_W");
            out.add(prefix + "_b");
        }
        return out;
    }

    /** GradientCheckUtil wants DOUBLE as ND4J's default data type too; restored afterwards. */
    static void inDouble(Runnable check) {
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
        try {
            check.run();
        } finally {
            Nd4j.setDefaultDataTypes(DataType.FLOAT, DataType.FLOAT);
        }
    }

    @Test
    void gradientCheckUtilPassesOnAMultiLayerNetworkInDouble() {
        inDouble(() -> {
            MultiLayerNetwork lora = LoraDl4j.apply(Nets.mln(DataType.DOUBLE, new NoOp(), 3), CONFIG, "layer0", "layer2");
            randomizeB(lora.getLayers());
            DataSet data = Nets.task(DataType.DOUBLE, 1, 2, 8);
            boolean ok = GradientCheckUtil.checkGradients(new GradientCheckUtil.MLNConfig().net(lora)
                    .input(data.getFeatures()).labels(data.getLabels()).epsilon(1e-6).maxRelError(1e-5)
                    .minAbsoluteError(1e-10).excludeParams(frozenKeys(lora.getLayers(), true)));
            assertTrue(ok, "GradientCheckUtil on loraA/loraB of layer0 and layer2");
            double worst = worstRelativeError(lora, data);
            System.out.printf("lora-dl4j gradient check (MLN, double): worst relative error %.3e%n", worst);
            assertTrue(worst < 1e-6, "worst relative error " + worst);
        });
    }

    @Test
    void gradientCheckUtilPassesOnAComputationGraphInDouble() {
        inDouble(() -> {
            ComputationGraph lora = LoraDl4j.apply(Nets.graph(DataType.DOUBLE, new NoOp(), 3), CONFIG, "fc1", "out");
            randomizeB(lora.getLayers());
            DataSet data = Nets.task(DataType.DOUBLE, 1, 2, 8);
            boolean ok = GradientCheckUtil.checkGradients(new GradientCheckUtil.GraphConfig().net(lora)
                    .inputs(new INDArray[] {data.getFeatures()}).labels(new INDArray[] {data.getLabels()})
                    .epsilon(1e-6).maxRelError(1e-5).minAbsoluteError(1e-10)
                    .excludeParams(frozenKeys(lora.getLayers(), false)));
            assertTrue(ok, "GradientCheckUtil on loraA/loraB of fc1 and out");
        });
    }

    /**
     * Largest {@code |analytic − numeric| / (|analytic| + |numeric|)} over every loraA/loraB element, with the
     * numeric gradient a central difference of the network's (mean) score, step 1e-6 (differences below 1e-9, the
     * difference quotient's rounding, count as 0); the data set's masks, if any, apply to both.
     */
    static double worstRelativeError(MultiLayerNetwork net, DataSet data) {
        net.setInput(data.getFeatures());
        net.setLabels(data.getLabels());
        net.setLayerMaskArrays(data.getFeaturesMaskArray(), data.getLabelsMaskArray());
        net.computeGradientAndScore();
        // The network's gradient is summed over the minibatch; its score is the mean (the updater divides).
        INDArray analytic = net.getFlattenedGradients().div(data.numExamples());
        INDArray params = net.params();
        double worst = 0;
        long offset = 0;
        int checked = 0;
        for (org.deeplearning4j.nn.api.Layer l : net.getLayers()) {
            for (java.util.Map.Entry<String, INDArray> e : l.paramTable().entrySet()) {
                long n = e.getValue().length();
                if (e.getKey().equals(LoraParamInitializer.LORA_A_KEY)
                        || e.getKey().equals(LoraParamInitializer.LORA_B_KEY)) {
                    for (long i = offset; i < offset + n; i++) {
                        double orig = params.getDouble(i);
                        params.putScalar(i, orig + 1e-6);
                        double plus = net.score(data, true);
                        params.putScalar(i, orig - 1e-6);
                        double minus = net.score(data, true);
                        params.putScalar(i, orig);
                        double numeric = (plus - minus) / 2e-6;
                        double a = analytic.getDouble(i);
                        double denom = Math.abs(a) + Math.abs(numeric);
                        // below 1e-9 the difference is the central difference's own rounding (≈ ε·|score|/h)
                        double rel = denom == 0 || Math.abs(a - numeric) < 1e-9 ? 0 : Math.abs(a - numeric) / denom;
                        worst = Math.max(worst, rel);
                        checked++;
                    }
                }
                offset += n;
            }
        }
        assertEquals(LoraDl4j.trainableParameterCount(net), checked, "every LoRA parameter checked");
        return worst;
    }
}
