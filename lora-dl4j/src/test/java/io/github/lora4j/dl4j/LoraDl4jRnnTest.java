package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import java.io.File;
import java.io.IOException;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import org.deeplearning4j.gradientcheck.GradientCheckUtil;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.RNNFormat;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.LSTM;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayerWithBackprop;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * Issue 30 item 6's proof: a recurrent network whose {@code RnnOutputLayer} (and the dense layer before it, inside the
 * RNN through DL4J's {@code RnnToFeedForwardPreProcessor}) carry LoRA, with a frozen LSTM in between: fine-tuned with
 * {@code fit()}, with masks, in both data formats; gradients against finite differences in double.
 */
class LoraDl4jRnnTest {

    static final int IN = 4;
    static final int T = 6;
    static final int CLASSES = 3;

    @TempDir
    Path tmp;

    /** fc0 (dense, per step) → lstm → fc1 (dense, per step) → out (RnnOutputLayer, softmax), input [mb, IN, T]. */
    static MultiLayerNetwork net(DataType type, RNNFormat format, long seed) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(seed).dataType(type)
                .updater(type == DataType.DOUBLE ? new NoOp() : new Adam(0.03)).list()
                .layer(new DenseLayer.Builder().name("fc0").nOut(6).activation(Activation.TANH).build())
                .layer(new LSTM.Builder().name("lstm").nOut(6).dataFormat(format).build())
                .layer(new DenseLayer.Builder().name("fc1").nOut(6).activation(Activation.TANH).build())
                .layer(new RnnOutputLayer.Builder(LossFunction.MCXENT).name("out").nOut(CLASSES)
                        .activation(Activation.SOFTMAX).dataFormat(format).build())
                .setInputType(InputType.recurrent(IN, T, format)).build());
        net.init();
        return net;
    }

    /**
     * A sequence task: the class at step t is the argmax of {@code x_t·teacher + 0.8·x_{t−1}·teacher} (it needs the
     * LSTM's memory); sequences have lengths 3..T, with features and label masks [mb, T] (1 for real steps).
     */
    static DataSet task(DataType type, RNNFormat format, long teacherSeed, long dataSeed, int mb) {
        INDArray teacher = Nets.gaussian(teacherSeed, IN, CLASSES);
        Random r = new Random(dataSeed);
        INDArray x = Nd4j.zeros(DataType.DOUBLE, mb, IN, T);
        INDArray y = Nd4j.zeros(DataType.DOUBLE, mb, CLASSES, T);
        INDArray mask = Nd4j.zeros(DataType.DOUBLE, mb, T);
        for (int i = 0; i < mb; i++) {
            int length = 3 + r.nextInt(T - 2);
            double[] previous = new double[CLASSES];
            for (int t = 0; t < length; t++) {
                double[] score = new double[CLASSES];
                for (int f = 0; f < IN; f++) {
                    double v = r.nextGaussian();
                    x.putScalar(new int[] {i, f, t}, v);
                    for (int k = 0; k < CLASSES; k++) {
                        score[k] += v * teacher.getDouble(f, k);
                    }
                }
                int best = 0;
                for (int k = 0; k < CLASSES; k++) {
                    if (score[k] + 0.8 * previous[k] > score[best] + 0.8 * previous[best]) {
                        best = k;
                    }
                }
                y.putScalar(new int[] {i, best, t}, 1.0);
                mask.putScalar(i, t, 1.0);
                previous = score;
            }
        }
        if (format == RNNFormat.NWC) {
            x = x.permute(0, 2, 1).dup('c');
            y = y.permute(0, 2, 1).dup('c');
        }
        return new DataSet(x.castTo(type), y.castTo(type), mask.castTo(type), mask.castTo(type));
    }

    private static double score(MultiLayerNetwork net, DataSet data) {
        return net.score(data, false);
    }

    @Test
    void anRnnOutputLayerNetworkFineTunedWithFitLowersItsLossAndKeepsFrozenParametersBitwise() throws IOException {
        for (RNNFormat format : RNNFormat.values()) {
            MultiLayerNetwork base = net(DataType.FLOAT, format, 5);
            DataSet taskA = task(DataType.FLOAT, format, 1, 2, 32);
            for (int i = 0; i < 10; i++) {
                base.fit(taskA);
            }
            DataSet taskB = task(DataType.FLOAT, format, 9, 3, 32);
            INDArray baseOut = base.output(taskB.getFeatures(), false, taskB.getFeaturesMaskArray(), null);

            MultiLayerNetwork lora = LoraDl4j.apply(base, LoraConfig.builder().rank(2).alpha(4).build(), "fc0", "fc1",
                    "out");
            assertInstanceOf(LoraRnnOutputLayerImpl.class, lora.getLayer(3));
            assertInstanceOf(FrozenLayerWithBackprop.class, lora.getLayerWiseConfigurations().getConf(1).getLayer());
            assertBitwise(baseOut, lora.output(taskB.getFeatures(), false, taskB.getFeaturesMaskArray(), null),
                    format + ": output at init, masked");
            Map<String, INDArray> before = LoraDl4jTest.params(lora);
            double start = score(lora, taskB);
            for (int i = 0; i < 40; i++) {
                lora.fit(taskB);
            }
            double end = score(lora, taskB);
            System.out.printf("lora-dl4j RnnOutputLayer fine-tune (%s): masked loss %.4f -> %.4f%n", format, start, end);
            assertTrue(end < 0.8 * start, format + ": loss " + start + " -> " + end);
            Map<String, INDArray> after = LoraDl4jTest.params(lora);
            before.forEach((k, v) -> {
                if (k.endsWith("_loraA") || k.endsWith("_loraB")) {
                    assertFalse(v.equals(after.get(k)), format + ": " + k + " trains");
                } else {
                    assertBitwise(v, after.get(k), format + ": frozen " + k + " after fit");
                }
            });
            assertEquals(new Adam().stateSize(LoraDl4j.trainableParameterCount(lora)),
                    lora.getUpdater().getStateViewArray().length(), "updater state for the adapters alone");

            // merge / unmerge, mergeAndUnload, ModelSerializer, PEFT files: as for dense networks
            INDArray out = lora.output(taskB.getFeatures(), false, taskB.getFeaturesMaskArray(), null);
            LoraDl4j.merge(lora);
            assertTrue(out.equalsWithEps(lora.output(taskB.getFeatures(), false, taskB.getFeaturesMaskArray(), null),
                    1e-5), format + ": merged output");
            LoraDl4j.unmerge(lora);
            before.forEach((k, v) -> {
                if (k.endsWith("_W")) {
                    assertBitwise(after.get(k), LoraDl4jTest.params(lora).get(k), k + " after merge + unmerge");
                }
            });
            MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(lora);
            assertInstanceOf(RnnOutputLayer.class, plain.getLayerWiseConfigurations().getConf(3).getLayer());
            assertEquals(format, ((RnnOutputLayer) plain.getLayerWiseConfigurations().getConf(3).getLayer())
                    .getRnnDataFormat());
            assertTrue(out.equalsWithEps(plain.output(taskB.getFeatures(), false, taskB.getFeaturesMaskArray(), null),
                    1e-5), format + ": unloaded output");
            File zip = tmp.resolve("rnn-" + format + ".zip").toFile();
            ModelSerializer.writeModel(lora, zip, true);
            MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(zip, true);
            assertEquals(lora.getLayerWiseConfigurations(), restored.getLayerWiseConfigurations());
            assertBitwise(out, restored.output(taskB.getFeatures(), false, taskB.getFeaturesMaskArray(), null),
                    "restored output");
            MultiLayerNetwork fresh = LoraDl4j.apply(base, LoraConfig.builder().rank(2).alpha(4).build(), "fc0", "fc1",
                    "out");
            LoraDl4j.saveAdapter(lora, tmp.resolve("adapter-" + format));
            LoraDl4j.loadAdapter(fresh, tmp.resolve("adapter-" + format));
            assertBitwise(out, fresh.output(taskB.getFeatures(), false, taskB.getFeaturesMaskArray(), null),
                    "output after loading the saved adapter into a fresh LoRA network (F32 network, F32 file)");
        }
    }

    /** Every parameter key of the network but loraA and loraB, as GradientCheckUtil names them ("index_key"). */
    private static Set<String> allButLora(MultiLayerNetwork net) {
        Set<String> out = new HashSet<>();
        for (org.deeplearning4j.nn.api.Layer l : net.getLayers()) {
            for (String k : l.paramTable().keySet()) {
                if (!k.equals("loraA") && !k.equals("loraB")) {
                    out.add(l.getIndex() + "_" + k);
                }
            }
        }
        return out;
    }

    @Test
    void rnnOutputLayerLoraGradientsMatchFiniteDifferencesInDoubleWithMasks() {
        LoraDl4jGradientTest.inDouble(() -> {
            for (RNNFormat format : RNNFormat.values()) {
                LoraConfig config = LoraConfig.builder().rank(2).alpha(3).init(LoraInit.GAUSSIAN).build();
                MultiLayerNetwork lora = LoraDl4j.apply(net(DataType.DOUBLE, format, 3), config, "fc0", "fc1", "out");
                LoraDl4jGradientTest.randomizeB(lora.getLayers());
                DataSet data = task(DataType.DOUBLE, format, 1, 4, 3);
                assertTrue(data.getLabelsMaskArray().sumNumber().doubleValue() < 3 * T, "some steps are masked");
                if (format == RNNFormat.NCW) {      // DL4J's own check once; ours below for both formats
                    boolean ok = GradientCheckUtil.checkGradients(new GradientCheckUtil.MLNConfig().net(lora)
                            .input(data.getFeatures()).labels(data.getLabels())
                            .inputMask(data.getFeaturesMaskArray()).labelMask(data.getLabelsMaskArray())
                            .epsilon(1e-6).maxRelError(1e-5).minAbsoluteError(1e-10).excludeParams(allButLora(lora)));
                    assertTrue(ok, format + ": GradientCheckUtil on loraA/loraB of fc0, fc1 and out");
                }
                double worst = LoraDl4jGradientTest.worstRelativeError(lora, data);
                System.out.printf("lora-dl4j RnnOutputLayer gradient check (%s, double, masked): worst relative error "
                        + "%.3e%n", format, worst);
                assertTrue(worst < 1e-6, format + ": worst relative error " + worst);
            }
        });
    }

    /** A masked step contributes nothing: changing its features or labels changes neither score nor gradient. */
    @Test
    void maskedStepsContributeNothingToScoreOrGradient() {
        LoraDl4jGradientTest.inDouble(() -> {
            LoraConfig config = LoraConfig.builder().rank(2).alpha(3).init(LoraInit.GAUSSIAN).build();
            MultiLayerNetwork lora = LoraDl4j.apply(net(DataType.DOUBLE, RNNFormat.NCW, 3), config, "fc0", "fc1", "out");
            LoraDl4jGradientTest.randomizeB(lora.getLayers());
            DataSet data = task(DataType.DOUBLE, RNNFormat.NCW, 1, 4, 5);
            DataSet edited = data.copy();
            INDArray mask = data.getLabelsMaskArray();
            for (int i = 0; i < 5; i++) {
                for (int t = 0; t < T; t++) {
                    if (mask.getDouble(i, t) == 0) {
                        edited.getLabels().putScalar(new int[] {i, 0, t}, 1.0);
                    }
                }
            }
            double[] scores = new double[2];
            INDArray[] grads = new INDArray[2];
            int k = 0;
            for (DataSet d : new DataSet[] {data, edited}) {
                lora.setInput(d.getFeatures());
                lora.setLabels(d.getLabels());
                lora.setLayerMaskArrays(d.getFeaturesMaskArray(), d.getLabelsMaskArray());
                lora.computeGradientAndScore();
                scores[k] = lora.score();
                grads[k++] = lora.getFlattenedGradients().dup();
            }
            assertEquals(scores[0], scores[1], 0.0, "score");
            assertBitwise(grads[0], grads[1], "gradient");
        });
    }
}
