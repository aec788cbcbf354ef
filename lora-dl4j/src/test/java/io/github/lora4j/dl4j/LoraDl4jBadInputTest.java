package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Supplier;
import java.util.regex.Pattern;
import org.deeplearning4j.nn.api.OptimizationAlgorithm;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.ConvolutionLayer;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.LSTM;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Refusals name what was expected and what came, and leave the given network as it was. */
class LoraDl4jBadInputTest {

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();

    private static <T extends Throwable> void assertRefused(Class<T> type, MultiLayerNetwork net, Executable call,
            String... fragments) {
        INDArray before = net.params().dup();
        T e = assertThrows(type, call);
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "message should contain '" + f + "': " + e.getMessage());
        }
        assertBitwise(before, net.params(), "parameters after a refused call");
    }

    @Test
    void aTargetNamingNoLayerIsRefusedListingTheLayers() {
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 1);
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, "layer0", "q_proj"),
                "'q_proj' names no layer", "'layer0' (index 0)", "'layer2' (index 2)");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, "7"), "'7' names no layer");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, Pattern.compile("fc.*")),
                "'fc.*' matches no layer");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG), "at least one target");
    }

    @Test
    void layersWithoutALinearWeightAreRefused() {
        MultiLayerConfiguration conv = new NeuralNetConfiguration.Builder().seed(1).list()
                .layer(new ConvolutionLayer.Builder(3, 3).nOut(4).name("conv").build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nOut(3)
                        .activation(Activation.SOFTMAX).build())
                .setInputType(InputType.convolutional(8, 8, 1)).build();
        MultiLayerNetwork convNet = new MultiLayerNetwork(conv);
        convNet.init();
        assertRefused(IllegalArgumentException.class, convNet, () -> LoraDl4j.apply(convNet, CONFIG, "conv"),
                "'conv'", "is a ConvolutionLayer", "expected a DenseLayer, OutputLayer or RnnOutputLayer",
                "a convolution's weight is a kernel");

        MultiLayerConfiguration rnn = new NeuralNetConfiguration.Builder().seed(1).list()
                .layer(new LSTM.Builder().nIn(4).nOut(5).name("lstm").build())
                .layer(new RnnOutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(5).nOut(3)
                        .activation(Activation.SOFTMAX).build())
                .build();
        MultiLayerNetwork rnnNet = new MultiLayerNetwork(rnn);
        rnnNet.init();
        assertRefused(IllegalArgumentException.class, rnnNet, () -> LoraDl4j.apply(rnnNet, CONFIG, "lstm"),
                "'lstm'", "is a LSTM", "expected a DenseLayer, OutputLayer or RnnOutputLayer",
                "stacks its gates'");
    }

    @Test
    void unsupportedDataTypesAndConfigsAreRefused() {
        // DL4J networks accept DOUBLE, FLOAT or FLOAT16 (named HALF); FLOAT16 is the one lora4j refuses
        MultiLayerNetwork half = Nets.mln(DataType.FLOAT16, new Adam(0.01), 1);
        assertRefused(IllegalArgumentException.class, half, () -> LoraDl4j.apply(half, CONFIG, "layer0"),
                "expected a network of data type FLOAT or DOUBLE, got HALF");
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 1);
        MultiLayerNetwork layerNorm = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().list()
                .layer(new DenseLayer.Builder().nIn(4).nOut(4).hasLayerNorm(true).build())
                .layer(new OutputLayer.Builder().nIn(4).nOut(2).build()).build());
        layerNorm.init();
        assertRefused(IllegalArgumentException.class, layerNorm, () -> LoraDl4j.apply(layerNorm, CONFIG, "0"),
                "has layer norm");
    }

    @Test
    void wrongStateIsRefused() {
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 1);
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.merge(net), "with LoRA layers");
        MultiLayerNetwork lora = LoraDl4j.apply(net, CONFIG, "layer0");
        assertRefused(IllegalStateException.class, lora, () -> LoraDl4j.apply(lora, CONFIG, "layer1"),
                "already a LoRA layer");
        assertRefused(IllegalStateException.class, lora, () -> LoraDl4j.unmerge(lora), "is not merged");
        LoraDl4j.merge(lora);
        assertRefused(IllegalStateException.class, lora, () -> LoraDl4j.merge(lora), "already merged");
        Supplier<MultiLayerNetwork> uninitialised = () -> new MultiLayerNetwork(net.getLayerWiseConfigurations().clone());
        MultiLayerNetwork raw = uninitialised.get();
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> LoraDl4j.apply(raw, CONFIG, "layer0"));
        assertTrue(e.getMessage().contains("call init()"), e.getMessage());
    }

    /** Dense "d" (4→6), dense "d" (6→6), output (6→2): DL4J accepts two layers with one name. */
    private static MultiLayerNetwork twoLayersNamedD(LoraSettings lora) {
        DenseLayer d0 = new DenseLayer.Builder().nIn(4).nOut(6).activation(Activation.TANH).name("d").build();
        DenseLayer d1 = new DenseLayer.Builder().nIn(6).nOut(6).activation(Activation.TANH).name("d").build();
        OutputLayer out = new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(6).nOut(2)
                .activation(Activation.IDENTITY).build();
        NeuralNetConfiguration.ListBuilder b = new NeuralNetConfiguration.Builder().seed(3).updater(new Adam(0.01)).list();
        if (lora == null) {
            b.layer(d0).layer(d1).layer(out);
        } else {        // a LoRA network made without apply (e.g. from JSON), which nothing checked
            b.layer(new LoraDenseLayer(d0, lora)).layer(new LoraDenseLayer(d1, lora)).layer(new LoraOutputLayer(out, null));
        }
        MultiLayerNetwork net = new MultiLayerNetwork(b.build());
        net.init();
        return net;
    }

    /** Issue 29 item 3: apply(net, cfg, "d") adapted both, then saveAdapter, counts and merge acted on one. */
    @Test
    void twoTargetedLayersWithOneNameAreRefusedNamingBoth() {
        MultiLayerNetwork net = twoLayersNamedD(null);
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, "d"),
                "layers 'd' (index 0) and 'd' (index 1) share the name 'd'", "distinct names");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, "0", "1"),
                "share the name 'd'");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, Pattern.compile("d")),
                "share the name 'd'");
        MultiLayerNetwork one = LoraDl4j.apply(net, CONFIG, "1");           // one of them is fine
        assertEquals(2L * (6 + 6), LoraDl4j.trainableParameterCount(one));
    }

    @Test
    void aLoraNetworkWithTwoAdaptedLayersOfOneNameIsRefusedByEveryCallNotActedOnHalfway(@TempDir Path dir)
            throws IOException {
        MultiLayerNetwork net = twoLayersNamedD(LoraSettings.of(CONFIG));
        String[] named = {"share the name 'd'", "layer name: d"};
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.trainableParameterCount(net), named);
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.isMerged(net), named);
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.merge(net), named);
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.saveAdapter(net, dir.resolve("a")), named);
        assertFalse(Files.exists(dir.resolve("a")), "nothing written");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.mergeAndUnload(net), named);
    }

    /**
     * Issue 29 item 11: the line-search solvers failed on every LoRA network with an ND4J shape error in fit(); apply
     * refuses them, since they step frozen W and b past the NoOp updater.
     */
    @Test
    void lineSearchOptimizersAreRefusedByApplyNamingTheAlgorithm() {
        for (OptimizationAlgorithm algo : List.of(OptimizationAlgorithm.LINE_GRADIENT_DESCENT,
                OptimizationAlgorithm.CONJUGATE_GRADIENT, OptimizationAlgorithm.LBFGS)) {
            MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(1)
                    .optimizationAlgo(algo).list()
                    .layer(new DenseLayer.Builder().nIn(4).nOut(6).build())
                    .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(6).nOut(2)
                            .activation(Activation.IDENTITY).build()).build());
            net.init();
            assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, "0"),
                    "layer 'layer0' (index 0) is configured with optimizationAlgo " + algo,
                    "STOCHASTIC_GRADIENT_DESCENT (DL4J's default) only");
            ComputationGraph graph = new ComputationGraph(new NeuralNetConfiguration.Builder().seed(1)
                    .optimizationAlgo(algo).graphBuilder().addInputs("in")
                    .addLayer("fc", new DenseLayer.Builder().nIn(4).nOut(6).build(), "in")
                    .addLayer("out", new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(6).nOut(2)
                            .activation(Activation.IDENTITY).build(), "fc")
                    .setOutputs("out").build());
            graph.init();
            INDArray before = graph.params().dup();
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> LoraDl4j.apply(graph, CONFIG, "fc"));
            assertTrue(e.getMessage().contains("optimizationAlgo " + algo), e.getMessage());
            assertBitwise(before, graph.params(), "graph parameters after a refused apply");
        }
    }

    /** Issue 29 item 19: merge documents IllegalStateException for a non-finite adapter, and threw the other type. */
    @Test
    void mergeOfANonFiniteAdapterThrowsTheDocumentedIllegalStateExceptionAndChangesNothing() {
        for (double bad : new double[] {Double.NaN, Double.POSITIVE_INFINITY}) {
            MultiLayerNetwork lora = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 1), CONFIG, "layer0",
                    "layer2");
            lora.getLayer(2).getParam("loraB").putScalar(1, bad);
            assertRefused(IllegalStateException.class, lora, () -> LoraDl4j.merge(lora), "cannot merge layer",
                    "layer name: layer2", "expected finite values", "W left unchanged");
            assertFalse(LoraDl4j.isMerged(lora), "not merged");
            lora.getLayer(2).getParam("loraB").putScalar(1, 0.5);
            LoraDl4j.merge(lora);                   // finite again: it merges
            assertTrue(LoraDl4j.isMerged(lora));
        }
    }
}
