package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.PeftAdapterConfig;
import java.io.File;
import java.io.IOException;
import java.nio.file.Path;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;
import org.nd4j.linalg.ops.transforms.Transforms;

/**
 * Issue 30 item 7: dropout on the LoRA input in lora-dl4j, as PEFT applies it ({@code B(A(dropout(x)))}, training
 * only, the base path undropped), with the masks lora-core's {@link LoraLinear} draws for the same configuration, one
 * mask per input shared by DL4J's forward, backward and score.
 */
class LoraDl4jDropoutTest {

    @TempDir
    Path tmp;

    /** layer0: dense IN → 5 (tanh), layer1: output 5 → 3 (softmax, MCXENT); DOUBLE. */
    private static MultiLayerNetwork base(long seed, org.nd4j.linalg.learning.config.IUpdater updater) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(seed)
                .dataType(DataType.DOUBLE).updater(updater).list()
                .layer(new DenseLayer.Builder().nIn(Nets.IN).nOut(5).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunction.MCXENT).nIn(5).nOut(3).activation(Activation.SOFTMAX)
                        .build())
                .build());
        net.init();
        return net;
    }

    private static LoraConfig config(double p) {
        return LoraConfig.builder().rank(2).alpha(3).dropout(p).init(LoraInit.GAUSSIAN).build();
    }

    /** A lora-core layer equal to layer {@code i} of {@code net}, with the configuration lora-dl4j gives it. */
    private static LoraLinear oracle(MultiLayerNetwork net, int i, LoraConfig config) {
        Layer l = net.getLayer(i);
        LoraLinear o = LoraLinear.wrap(l.getParam("W").dup(), l.getParam("b").dup(), config.forModule("layer" + i),
                WeightLayout.IN_OUT);
        o.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, l.getParam("loraA"), l.getParam("loraB"));
        return o.train();
    }

    @Property(tries = 25)
    void aLayersTrainingForwardAndBackwardEqualLoraLinearsWithTheSameMasks(
            @ForAll @IntRange(min = 1, max = 9) int n, @ForAll @DoubleRange(min = 0.05, max = 0.9) double p) {
        MultiLayerNetwork lora = LoraDl4j.apply(base(n, new NoOp()), config(p), "layer0");
        lora.initGradientsView();
        LoraDl4jGradientTest.randomizeB(lora.getLayers());
        LoraLinear oracle = oracle(lora, 0, config(p));
        Layer layer = lora.getLayer(0);
        LayerWorkspaceMgr ws = LayerWorkspaceMgr.noWorkspaces();
        for (int round = 0; round < 2; round++) {            // a new input draws the next mask of the stream
            INDArray x = Nets.gaussian(31L * n + round, n, Nets.IN);
            INDArray g = Nets.gaussian(17L * n + round, n, 5);
            INDArray y = layer.activate(x, true, ws);
            Pair<Gradient, INDArray> back = layer.backpropGradient(g, ws);
            INDArray act = Transforms.tanh(oracle.forward(x));     // the oracle draws its mask k as the layer did
            assertClose(act, y, "round " + round + ": forward with dropout");
            INDArray dx = oracle.backward(g.mul(act.mul(act).rsubi(1.0)));      // through tanh'
            assertClose(dx, back.getSecond(), "round " + round + ": dL/dx");
            assertClose(oracle.adapter(LoraLinear.DEFAULT_ADAPTER).gradA(), back.getFirst().getGradientFor("loraA"),
                    "round " + round + ": dA");
            assertClose(oracle.adapter(LoraLinear.DEFAULT_ADAPTER).gradB(), back.getFirst().getGradientFor("loraB"),
                    "round " + round + ": dB");
            oracle.zeroGrad();
            assertNotNull(((LoraLayer) layer).ops().currentMask(), "a training forward drew a mask");
        }
    }

    /**
     * The mask is the same in DL4J's forward (which feeds the next layer), its backward (which recomputes the forward)
     * and its score: a whole network's gradient and score equal the oracle's, which draws one mask per layer and input.
     */
    @Test
    void aNetworksGradientAndScoreUseOneMaskPerLayerAndInput() {
        LoraDl4jGradientTest.inDouble(() -> {
            double p = 0.4;
            MultiLayerNetwork lora = LoraDl4j.apply(base(3, new NoOp()), config(p), "layer0", "layer1");
            LoraDl4jGradientTest.randomizeB(lora.getLayers());
            LoraLinear o0 = oracle(lora, 0, config(p));
            LoraLinear o1 = oracle(lora, 1, config(p));
            for (int round = 0; round < 3; round++) {
                DataSet data = Nets.task(DataType.DOUBLE, 4, 10 + round, 8);
                lora.setInput(data.getFeatures());
                lora.setLabels(data.getLabels());
                lora.computeGradientAndScore();

                INDArray act = Transforms.tanh(o0.forward(data.getFeatures()));
                INDArray prob = Transforms.softmax(o1.forward(act));
                double loss = -Transforms.log(prob).muli(data.getLabels()).sumNumber().doubleValue() / 8;
                assertEquals(loss, lora.score(), 1e-12 * Math.abs(loss), "round " + round + ": score");
                INDArray dAct = o1.backward(prob.sub(data.getLabels()));           // MCXENT + softmax: p − y
                o0.backward(dAct.mul(act.mul(act).rsubi(1.0)));
                Gradient g = lora.gradient();
                for (int i = 0; i < 2; i++) {
                    LoraLinear o = i == 0 ? o0 : o1;
                    assertClose(o.adapter(LoraLinear.DEFAULT_ADAPTER).gradA(), g.getGradientFor(i + "_loraA"),
                            "round " + round + ": layer" + i + " dA");
                    assertClose(o.adapter(LoraLinear.DEFAULT_ADAPTER).gradB(), g.getGradientFor(i + "_loraB"),
                            "round " + round + ": layer" + i + " dB");
                    o.zeroGrad();
                }
                INDArray mask = ((LoraLayer) lora.getLayer(0)).ops().currentMask();
                assertTrue(mask.sumNumber().doubleValue() < mask.length(), "p = 0.4 drops something");
            }
        });
    }

    @Test
    void inferenceHasNoDropoutAndTheBasePathSeesTheInputUndropped() {
        MultiLayerNetwork base = base(5, new Adam(0.01));
        MultiLayerNetwork dropped = LoraDl4j.apply(base, config(0.5), "layer0", "layer1");
        MultiLayerNetwork plain = LoraDl4j.apply(base, config(0.0), "layer0", "layer1");
        LoraDl4jGradientTest.randomizeB(dropped.getLayers());
        LoraDl4jGradientTest.randomizeB(plain.getLayers());
        INDArray x = Nets.gaussian(8, 6, Nets.IN);
        assertBitwise(plain.output(x), dropped.output(x), "inference: no dropout");
        assertNull(((LoraLayer) dropped.getLayer(0)).ops().currentMask(), "inference draws no mask");
        // B = 0: the LoRA path adds nothing, so a training forward is the base output whatever the mask
        MultiLayerNetwork fresh = LoraDl4j.apply(base, config(0.5), "layer0");
        assertBitwise(base.getLayer(0).activate(x, true, LayerWorkspaceMgr.noWorkspaces()),
                fresh.getLayer(0).activate(x, true, LayerWorkspaceMgr.noWorkspaces()), "base path undropped");
        assertNotNull(((LoraLayer) fresh.getLayer(0)).ops().currentMask(), "the training forward drew a mask");
    }

    @Test
    void theSameConfigurationTrainsTheSameBitsAndAnotherSeedOtherOnes() {
        DataSet data = Nets.task(DataType.DOUBLE, 4, 5, 16);
        INDArray[] params = new INDArray[3];
        for (int k = 0; k < 3; k++) {
            LoraConfig c = k < 2 ? config(0.3) : config(0.3).toBuilder().seed(99).build();
            MultiLayerNetwork lora = LoraDl4j.apply(base(5, new Adam(0.05)), c, "layer0", "layer1");
            for (int i = 0; i < 4; i++) {
                lora.fit(data);
            }
            params[k] = lora.params().dup();
        }
        assertBitwise(params[0], params[1], "two runs of one configuration");
        assertFalse(params[0].equals(params[2]), "another seed draws other masks (and another A)");
    }

    @Test
    void loadAdapterTakesTheFilesLoraDropoutAndTheNetworkKeepsItWhenSaved() throws IOException {
        MultiLayerNetwork trained = LoraDl4j.apply(base(5, new Adam(0.01)), config(0.25), "layer0", "layer1");
        trained.fit(Nets.task(DataType.DOUBLE, 4, 5, 16));
        LoraDl4j.saveAdapter(trained, tmp.resolve("adapter"));
        MultiLayerNetwork target = LoraDl4j.apply(base(5, new Adam(0.01)), config(0.0), "layer0", "layer1");

        PeftAdapterConfig file = LoraDl4j.loadAdapter(target, tmp.resolve("adapter"));

        assertEquals(0.25, file.loraDropout());
        for (int i = 0; i < 2; i++) {
            LoraLayerConf c = ((LoraLayer) target.getLayer(i)).loraConf();
            assertEquals(0.25, c.lora().getDropout(), "layer" + i + "'s dropout from the file");
        }
        INDArray x = Nets.gaussian(3, 6, Nets.IN);
        target.getLayer(0).activate(x, true, LayerWorkspaceMgr.noWorkspaces());
        assertNotNull(((LoraLayer) target.getLayer(0)).ops().currentMask(), "the next training forward drops out");
        File zip = tmp.resolve("net.zip").toFile();
        ModelSerializer.writeModel(target, zip, true);
        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(zip, true);
        assertEquals(0.25, ((LoraLayer) restored.getLayer(0)).loraConf().lora().getDropout(), "saved with the network");
        assertTrue(target.getLayerWiseConfigurations().toJson().contains("\"dropout\" : 0.25"),
                "the JSON configuration holds it");
    }

    private static void assertClose(INDArray expected, INDArray actual, String what) {
        double scale = Math.max(1, expected.amaxNumber().doubleValue());
        double diff = expected.sub(actual.reshape(expected.shape())).amaxNumber().doubleValue();
        assertTrue(diff <= 1e-12 * scale, what + ": max |lora-dl4j − LoraLinear| = " + diff + " (scale " + scale + ")");
    }
}
