package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Laws of a LoRA layer over random shapes: DL4J's output at init, and lora-core's LoraLinear as the oracle. */
class LoraLayerPropertiesTest {

    private static MultiLayerNetwork net(DataType type, int in, int out, Activation activation, long seed) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().seed(seed).dataType(type)
                .updater(new Sgd(0.1)).list()
                .layer(new DenseLayer.Builder().nIn(in).nOut(out).activation(activation).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(out).nOut(2)
                        .activation(Activation.IDENTITY).build())
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    @Property(tries = 80)
    void aFreshLoraNetworkComputesTheBaseOutputBitForBit(@ForAll @IntRange(min = 1, max = 24) int in,
            @ForAll @IntRange(min = 1, max = 24) int out, @ForAll @IntRange(min = 1, max = 8) int rank,
            @ForAll @IntRange(min = 1, max = 9) int n, @ForAll Activation activation, @ForAll boolean rsLora) {
        // any rank, also above min(in, out) of either layer (layer1 is out -> 2), as PEFT allows
        MultiLayerNetwork base = net(DataType.FLOAT, in, out, activation, in * 31L + out);
        INDArray x = Nets.gaussian(n + 97L * in, n, in).castTo(DataType.FLOAT);
        INDArray expected = base.output(x);

        MultiLayerNetwork lora = LoraDl4j.apply(base,
                LoraConfig.builder().rank(rank).alpha(2 * rank).rsLora(rsLora).build(), "layer0", "layer1");

        assertBitwise(expected, lora.output(x), activation + " network output");
    }

    @Property(tries = 40)
    void forwardAndBackwardAgreeWithLoraLinear(@ForAll @IntRange(min = 1, max = 20) int in,
            @ForAll @IntRange(min = 1, max = 20) int out, @ForAll @IntRange(min = 1, max = 6) int rank,
            @ForAll @IntRange(min = 1, max = 7) int n) {
        // ranks above min(in, out) included
        LoraConfig config = LoraConfig.builder().rank(rank).alpha(3.0).build();
        MultiLayerNetwork lora = LoraDl4j.apply(net(DataType.DOUBLE, in, out, Activation.IDENTITY, n), config, "0");
        lora.initGradientsView();
        Layer layer = lora.getLayer(0);
        INDArray w = layer.getParam("W");
        INDArray b = layer.getParam("b");
        INDArray a = layer.getParam("loraA");
        layer.getParam("loraB").assign(Nets.gaussian(in + 13L * out, out, rank));
        INDArray bB = layer.getParam("loraB");
        INDArray x = Nets.gaussian(5L * n + in, n, in);
        INDArray g = Nets.gaussian(7L * n + out, n, out);

        LoraLinear oracle = LoraLinear.wrap(w.dup(), b.dup(), config, WeightLayout.IN_OUT);
        oracle.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a, bB);
        oracle.train();
        INDArray yOracle = oracle.forward(x);
        INDArray dxOracle = oracle.backward(g);

        LayerWorkspaceMgr ws = LayerWorkspaceMgr.noWorkspaces();
        INDArray y = layer.activate(x, true, ws);
        Pair<Gradient, INDArray> back = layer.backpropGradient(g, ws);

        assertClose(yOracle, y, "forward");
        assertClose(dxOracle, back.getSecond(), "dL/dx");
        assertClose(oracle.adapter(LoraLinear.DEFAULT_ADAPTER).gradA(), back.getFirst().getGradientFor("loraA"), "dA");
        assertClose(oracle.adapter(LoraLinear.DEFAULT_ADAPTER).gradB(), back.getFirst().getGradientFor("loraB"), "dB");
    }

    private static void assertClose(INDArray expected, INDArray actual, String what) {
        double scale = Math.max(1, expected.amaxNumber().doubleValue());
        double diff = expected.sub(actual.reshape(expected.shape())).amaxNumber().doubleValue();
        assertTrue(diff <= 1e-12 * scale, what + ": max |lora-dl4j − LoraLinear| = " + diff + " (scale " + scale + ")");
    }
}
