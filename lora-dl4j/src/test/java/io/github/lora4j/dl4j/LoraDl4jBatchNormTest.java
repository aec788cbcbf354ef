package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import java.io.File;
import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.nio.file.Path;
import java.util.Map;
import org.deeplearning4j.nn.conf.CNN2DFormat;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.preprocessor.CnnToFeedForwardPreProcessor;
import org.deeplearning4j.nn.conf.preprocessor.FeedForwardToCnnPreProcessor;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * Issue 30 item 6: an untargeted BatchNormalization passes as a {@link FrozenBatchNormalization}: DL4J's inference
 * forward bit for bit, the gradient of that affine map (against finite differences in double, for every
 * parameterisation and layout), and its statistics never change (the layer-type table checks {@code fit()}).
 */
class LoraDl4jBatchNormTest {

    @TempDir
    Path tmp;

    /** fc (dense, target) → bn → out (target); "cnn…" variants reshape fc's 72 outputs to [n, 2, 6, 6] around bn. */
    private static MultiLayerNetwork net(String variant) {
        boolean cnn = variant.startsWith("cnn");
        BatchNormalization.Builder bn = new BatchNormalization.Builder().name("bn")
                .useLogStd(!variant.equals("variance")).lockGammaBeta(variant.equals("lockGammaBeta"));
        if (variant.equals("lockGammaBeta")) {
            bn.gamma(1.7).beta(-0.3);
        }
        if (variant.equals("cnnNHWC")) {
            bn.dataFormat(CNN2DFormat.NHWC).nIn(6).nOut(6);       // the last axis of [n, 2, 6, 6] as channels
        } else if (cnn) {
            bn.nIn(2).nOut(2);
        } else {
            bn.nIn(8).nOut(8);
        }
        int width = cnn ? 72 : 8;
        NeuralNetConfiguration.ListBuilder b = new NeuralNetConfiguration.Builder().seed(4).dataType(DataType.DOUBLE)
                .updater(new NoOp()).activation(Activation.IDENTITY).list()
                .layer(new DenseLayer.Builder().name("fc").nIn(6).nOut(width).activation(Activation.TANH).build())
                .layer(bn.build())
                .layer(new OutputLayer.Builder(LossFunction.MCXENT).name("out").nIn(width).nOut(3)
                        .activation(Activation.SOFTMAX).build());
        b.overrideNinUponBuild(false);     // else DL4J's input-type inference resets the layout to NCHW
        if (cnn) {
            b.inputPreProcessor(1, new FeedForwardToCnnPreProcessor(6, 6, 2))
                    .inputPreProcessor(2, new CnnToFeedForwardPreProcessor(6, 6, 2));
        }
        MultiLayerNetwork net = new MultiLayerNetwork(b.build());
        net.init();
        BatchNormalization built = (BatchNormalization) net.getLayerWiseConfigurations().getConf(1).getLayer();
        assertEquals(variant.equals("cnnNHWC") ? CNN2DFormat.NHWC : CNN2DFormat.NCHW, built.getCnn2DFormat(), variant);
        // statistics and scale that make every part of the map matter: mean ≠ 0, σ ≠ 1, γ ≠ 1, β ≠ 0
        long seed = 40;
        for (Map.Entry<String, INDArray> e : net.getLayer(1).paramTable().entrySet()) {
            INDArray v = Nets.gaussian(seed++, 1, (int) e.getValue().length());
            INDArray value = switch (e.getKey()) {
                case "var" -> v.mul(v).addi(0.5);
                case "log10stdev" -> v.mul(0.3);
                case "gamma" -> v.mul(0.5).addi(1.0);
                default -> v;
            };
            e.getValue().assign(value.reshape(e.getValue().shape()));
        }
        return net;
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"logStd", "variance", "lockGammaBeta", "cnnNCHW", "cnnNHWC"})
    void gradientsThroughAFrozenBatchNormalizationMatchFiniteDifferencesInDouble(String variant) {
        LoraDl4jGradientTest.inDouble(() -> {
            MultiLayerNetwork base = net(variant);
            DataSet data = Nets.task(DataType.DOUBLE, 1, 2, 7);
            LoraConfig config = LoraConfig.builder().rank(2).alpha(3).init(LoraInit.GAUSSIAN).build();
            MultiLayerNetwork lora = LoraDl4j.apply(base, config, "fc", "out");
            assertInstanceOf(FrozenBatchNormalizationImpl.class, lora.getLayer(1));
            LoraDl4jGradientTest.randomizeB(lora.getLayers());
            MultiLayerNetwork atInit = LoraDl4j.apply(base, config, "fc", "out");
            assertBitwise(base.output(data.getFeatures()), atInit.output(data.getFeatures()), variant + ": output");
            double worst = LoraDl4jGradientTest.worstRelativeError(lora, data);
            System.out.printf("frozen BatchNormalization (%s): worst relative error %.3e%n", variant, worst);
            assertTrue(worst < 1e-6, variant + ": worst relative error " + worst);
        });
    }

    @Test
    void theFrozenFormCopiesEverySettingOfDl4jsBatchNormalizationAndUnloadsToTheOriginal() throws Exception {
        BatchNormalization bn = new BatchNormalization.Builder().name("bn").nIn(5).nOut(5).decay(0.7).eps(1e-3)
                .minibatch(false).gamma(2).beta(-1).lockGammaBeta(true).cudnnAllowFallback(false).useLogStd(false)
                .dataFormat(CNN2DFormat.NHWC).activation(Activation.TANH).build();
        FrozenBatchNormalization frozen = new FrozenBatchNormalization(bn, bn);
        for (Field f : BatchNormalization.class.getDeclaredFields()) {
            if (!Modifier.isStatic(f.getModifiers())) {
                f.setAccessible(true);
                assertEquals(f.get(bn), f.get(frozen), "field " + f.getName());
            }
        }
        assertEquals(bn.getLayerName(), frozen.getLayerName());
        assertEquals(bn.getNOut(), frozen.getNOut());
        assertEquals(bn.getActivationFn(), frozen.getActivationFn());
        assertInstanceOf(NoOp.class, frozen.getUpdaterByParam("gamma"));
        assertInstanceOf(NoOp.class, frozen.getUpdaterByParam("mean"));
        assertTrue(frozen.getRegularizationByParam("gamma").isEmpty());
        assertEquals(bn, frozen.getBase());
    }

    @Test
    void aNetworkWithAFrozenBatchNormalizationRoundTripsThroughModelSerializerAndUnloadsToDl4jsLayer()
            throws IOException {
        MultiLayerNetwork base = net("cnnNCHW");
        MultiLayerNetwork lora = LoraDl4j.apply(base, LoraConfig.builder().rank(2).alpha(4).build(), "fc", "out");
        DataSet data = Nets.task(DataType.DOUBLE, 1, 2, 7);
        File zip = tmp.resolve("bn.zip").toFile();
        ModelSerializer.writeModel(lora, zip, true);
        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(zip, true);
        assertEquals(lora.getLayerWiseConfigurations(), restored.getLayerWiseConfigurations());
        assertInstanceOf(FrozenBatchNormalizationImpl.class, restored.getLayer(1));
        assertBitwise(lora.output(data.getFeatures()), restored.output(data.getFeatures()), "restored output");
        MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(lora);
        assertEquals(base.getLayerWiseConfigurations().getConf(1).getLayer(),
                plain.getLayerWiseConfigurations().getConf(1).getLayer(), "DL4J's BatchNormalization back");
        assertBitwise(base.getLayer(1).params(), plain.getLayer(1).params(), "its parameters");
        assertBitwise(base.output(data.getFeatures()), plain.output(data.getFeatures()), "unloaded output");
    }
}
