package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_A_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_B_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.MAGNITUDE_KEY;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.DoraNorms;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.model.LoraModel;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import org.deeplearning4j.gradientcheck.GradientCheckUtil;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.RNNFormat;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.util.ModelSerializer;
import org.deeplearning4j.util.TimeSeriesUtils;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;
import org.nd4j.linalg.ops.transforms.Transforms;

/**
 * Issue 30 gap 2 in lora-dl4j: DoRA ({@code useDora}) as lora-core's {@link LoraLinear} computes it (PEFT's formula,
 * docs/dora.md): the magnitude {@code loraMagnitude [nOut]} a DL4J parameter, forward and gradients equal to
 * {@code LoraLinear}'s, finite differences with the norm held fixed (PEFT's detach), {@code fit}, PEFT's files both
 * ways, merge, and the refusals.
 */
class DoraDl4jTest {

    /** Worst relative difference of the layer-vs-LoraLinear property (forward, dL/dx, dA, dB, dm). */
    private static double worstAgreement;

    @TempDir
    Path tmp;

    private static LoraConfig dora(int rank, double dropout) {
        return LoraConfig.builder().rank(rank).alpha(3).dropout(dropout).init(LoraInit.GAUSSIAN).useDora(true).build();
    }

    /** layer0: dense in → out (identity, with or without bias), layer1: output out → 3 (softmax, MCXENT). */
    private static MultiLayerNetwork base(int in, int out, boolean bias, DataType type, long seed,
            org.nd4j.linalg.learning.config.IUpdater updater) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(seed).dataType(type)
                .updater(updater).list()
                .layer(new DenseLayer.Builder().nIn(in).nOut(out).hasBias(bias).activation(Activation.IDENTITY).build())
                .layer(new OutputLayer.Builder(LossFunction.MCXENT).nIn(out).nOut(3).activation(Activation.SOFTMAX)
                        .build())
                .build());
        net.init();
        return net;
    }

    /** A random B and a magnitude up to 30 % off the norms, so that every path (through B, A and c ≠ 1) counts. */
    static void randomize(Layer[] layers, long seed) {
        for (Layer l : layers) {
            INDArray b = l.paramTable().get(LORA_B_KEY);
            if (b != null) {
                b.assign(Nets.gaussian(seed++, Math.toIntExact(b.rows()), Math.toIntExact(b.columns())).muli(0.3));
            }
            INDArray m = l.paramTable().get(MAGNITUDE_KEY);
            if (m != null) {
                m.muli(Nets.gaussian(seed++, 1, (int) m.length()).reshape(m.length()).muli(0.1).addi(1.0));
            }
        }
    }

    /** A lora-core DoRA layer with layer {@code i}'s W, b, A, B and m, training. */
    private static LoraLinear oracle(MultiLayerNetwork net, int i, LoraConfig config) {
        Layer l = net.getLayer(i);
        INDArray b = l.paramTable().get("b");
        LoraLinear o = LoraLinear.wrap(l.getParam("W").dup(), b == null ? null : b.dup(),
                config.forModule("layer" + i), WeightLayout.IN_OUT);
        o.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, l.getParam(LORA_A_KEY), l.getParam(LORA_B_KEY),
                l.getParam(MAGNITUDE_KEY));
        return o.train();
    }

    /** {@code max |expected − actual| / max |expected|}, asserted at most 1e-12; returned. */
    private static double assertAgrees(INDArray expected, INDArray actual, String what) {
        double scale = expected.amaxNumber().doubleValue();
        double diff = expected.sub(actual.reshape(expected.shape()).castTo(expected.dataType())).amaxNumber()
                .doubleValue();
        double rel = scale == 0 ? diff : diff / scale;
        assertTrue(rel <= 1e-12, what + ": max |lora-dl4j − LoraLinear| / max |LoraLinear| = " + rel);
        return rel;
    }

    private static void agrees(INDArray expected, INDArray actual, String what) {
        worstAgreement = Math.max(worstAgreement, assertAgrees(expected, actual, what));
    }

    @AfterContainer
    static void report() {
        System.out.printf("lora-dl4j DoRA vs lora-core LoraLinear (double): worst relative error %.3e%n",
                worstAgreement);
    }

    @Property(tries = 60)
    void aDoraLayersForwardAndGradientsEqualLoraLinears(@ForAll @IntRange(min = 1, max = 9) int in,
            @ForAll @IntRange(min = 1, max = 9) int out, @ForAll @IntRange(min = 1, max = 7) int n,
            @ForAll @IntRange(min = 1, max = 4) int rank, @ForAll boolean bias, @ForAll boolean dropout) {
        int r = Math.min(rank, Math.min(in, out));
        LoraConfig cfg = dora(r, dropout ? 0.3 : 0.0);
        MultiLayerNetwork lora = LoraDl4j.apply(base(in, out, bias, DataType.DOUBLE, in * 31L + out, new NoOp()), cfg,
                "layer0");
        lora.initGradientsView();
        randomize(lora.getLayers(), n);
        LoraLinear oracle = oracle(lora, 0, cfg);
        LoraAdapter ad = oracle.adapter(LoraLinear.DEFAULT_ADAPTER);
        Layer layer = lora.getLayer(0);
        LayerWorkspaceMgr ws = LayerWorkspaceMgr.noWorkspaces();
        for (int round = 0; round < 2; round++) {            // with dropout, a new input draws the next mask
            INDArray x = Nets.gaussian(7L * n + round, n, in);
            INDArray g = Nets.gaussian(13L * n + round, n, out);
            INDArray y = layer.activate(x, true, ws);
            Pair<Gradient, INDArray> back = layer.backpropGradient(g, ws);
            String at = "in " + in + ", out " + out + ", n " + n + ", r " + r + ", bias " + bias + ", dropout "
                    + dropout + ", round " + round;
            agrees(oracle.forward(x), y, at + ": training forward");
            agrees(oracle.backward(g), back.getSecond(), at + ": dL/dx");
            agrees(ad.gradA(), back.getFirst().getGradientFor(LORA_A_KEY), at + ": dA");
            agrees(ad.gradB(), back.getFirst().getGradientFor(LORA_B_KEY), at + ": dB");
            agrees(ad.gradMagnitude(), back.getFirst().getGradientFor(MAGNITUDE_KEY), at + ": dm");
            oracle.zeroGrad();
        }
        INDArray x = Nets.gaussian(5L * n, n, in);
        agrees(oracle.eval().forward(x), layer.activate(x, false, ws), "eval forward");
        oracle.train();
    }

    @Test
    void aFreshDoraLayerStartsAtTheColumnNormsOfWAndCountsItsMagnitude() {
        MultiLayerNetwork base = Nets.mln(DataType.DOUBLE, new Adam(0.01), 3);
        base.fit(Nets.task(DataType.DOUBLE, 1, 2, 16));     // W is no longer what the seed's weight init draws
        MultiLayerNetwork lora = LoraDl4j.apply(base, dora(2, 0), "layer0", "layer2");
        for (int i : new int[] {0, 2}) {
            Layer l = lora.getLayer(i);
            INDArray w = l.getParam("W");
            assertAgrees(Transforms.sqrt(Transforms.pow(w, 2).sum(0)).reshape(w.columns()),
                    l.getParam(MAGNITUDE_KEY), "layer" + i + ": m = column norms of W [nIn, nOut]");
        }
        INDArray x = Nets.gaussian(4, 5, Nets.IN);
        assertAgrees(base.output(x), lora.output(x), "a fresh DoRA adapter changes nothing (B = 0, m = norms)");
        long expected = 2L * (Nets.IN + Nets.HIDDEN) + Nets.HIDDEN + 2L * (Nets.HIDDEN + Nets.CLASSES) + Nets.CLASSES;
        assertEquals(expected, LoraDl4j.trainableParameterCount(lora), "r·(nIn + nOut) + nOut per DoRA layer");
    }

    private static INDArray norms(Layer l, double s) {
        return Nd4j.createFromArray(DoraNorms.of(l.getParam("W"), WeightLayout.IN_OUT, l.getParam(LORA_A_KEY),
                l.getParam(LORA_B_KEY), s));
    }

    /**
     * Central differences of the network's score in double for every element of loraA, loraB and loraMagnitude.
     * PEFT's gradient treats the norm {@code ‖W + s·B·A‖} as a constant, so for A and B the difference is taken with
     * the norm held at its value: m is rescaled by {@code norm(A ± h) / norm(A)} with the perturbation, which keeps
     * {@code c = m / norm} what a constant norm gives.
     */
    @Test
    void gradientsEqualCentralDifferencesWithTheNormHeldFixed() {
        LoraDl4jGradientTest.inDouble(() -> {
            LoraConfig cfg = dora(3, 0);
            MultiLayerNetwork net = LoraDl4j.apply(Nets.mln(DataType.DOUBLE, new NoOp(), 3), cfg, "layer0", "layer2");
            randomize(net.getLayers(), 21);
            DataSet data = Nets.task(DataType.DOUBLE, 1, 2, 8);
            net.setInput(data.getFeatures());
            net.setLabels(data.getLabels());
            net.computeGradientAndScore();
            double worst = 0;
            double worstAbs = 0;
            double largest = 0;
            int checked = 0;
            for (int li : new int[] {0, 2}) {
                Layer l = net.getLayer(li);
                double s = cfg.scaling();
                Gradient grad = net.gradient();
                for (String key : List.of(LORA_A_KEY, LORA_B_KEY, MAGNITUDE_KEY)) {
                    INDArray p = l.getParam(key);
                    INDArray analytic = grad.getGradientFor(li + "_" + key).div(data.numExamples());
                    INDArray flatP = p.reshape(p.length());
                    INDArray flatG = analytic.reshape(analytic.length());
                    for (long i = 0; i < p.length(); i++) {
                        double[] score = new double[2];
                        for (int side = 0; side < 2; side++) {
                            INDArray m0 = l.getParam(MAGNITUDE_KEY).dup();
                            INDArray n0 = norms(l, s);
                            double orig = flatP.getDouble(i);
                            flatP.putScalar(i, orig + (side == 0 ? 1e-6 : -1e-6));
                            if (!key.equals(MAGNITUDE_KEY)) {
                                l.getParam(MAGNITUDE_KEY).muli(norms(l, s).divi(n0));   // the norm held fixed
                            }
                            score[side] = net.score(data, false);
                            flatP.putScalar(i, orig);
                            l.getParam(MAGNITUDE_KEY).assign(m0);
                        }
                        double numeric = (score[0] - score[1]) / 2e-6;
                        double a = flatG.getDouble(i);
                        double denom = Math.abs(a) + Math.abs(numeric);
                        double rel = denom == 0 || Math.abs(a - numeric) < 1e-9 ? 0 : Math.abs(a - numeric) / denom;
                        assertTrue(rel < 1e-6, "layer" + li + " " + key + "[" + i + "]: analytic " + a + ", numeric "
                                + numeric);
                        worst = Math.max(worst, rel);
                        worstAbs = Math.max(worstAbs, Math.abs(a - numeric));
                        largest = Math.max(largest, Math.abs(a));
                        checked++;
                    }
                }
            }
            assertEquals(LoraDl4j.trainableParameterCount(net), checked, "every DoRA parameter checked");
            System.out.printf("lora-dl4j DoRA central differences (double): worst relative error %.3e, worst "
                    + "|analytic − numeric| %.3e (largest |gradient| %.3e) over %d%n", worst, worstAbs, largest, checked);
        });
    }

    /** DL4J's own gradient check, on m only (for A and B the norm's detach makes the analytic gradient differ). */
    @Test
    void gradientCheckUtilPassesOnTheMagnitude() {
        LoraDl4jGradientTest.inDouble(() -> {
            MultiLayerNetwork net = LoraDl4j.apply(Nets.mln(DataType.DOUBLE, new NoOp(), 5), dora(2, 0), "layer0",
                    "layer1", "layer2");
            randomize(net.getLayers(), 3);
            DataSet data = Nets.task(DataType.DOUBLE, 1, 2, 8);
            java.util.Set<String> exclude = new java.util.HashSet<>();
            for (int i = 0; i < 3; i++) {
                for (String k : List.of("W", "b", LORA_A_KEY, LORA_B_KEY)) {
                    exclude.add(i + "_" + k);
                }
            }
            assertTrue(GradientCheckUtil.checkGradients(new GradientCheckUtil.MLNConfig().net(net)
                    .input(data.getFeatures()).labels(data.getLabels()).epsilon(1e-6).maxRelError(1e-6)
                    .minAbsoluteError(1e-10).excludeParams(exclude)), "GradientCheckUtil on loraMagnitude");
        });
    }

    @Test
    void fitTrainsABAndMWithWAndBBitwiseUnchanged() {
        for (double p : new double[] {0.0, 0.25}) {
            MultiLayerNetwork net = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.05), 9), dora(2, p),
                    "layer0", "layer1", "layer2");
            Map<String, INDArray> before = net.paramTable();
            Map<String, INDArray> start = new java.util.LinkedHashMap<>();
            before.forEach((k, v) -> start.put(k, v.dup()));
            DataSet data = Nets.task(DataType.FLOAT, 4, 5, 64);
            double first = net.score(data);
            for (int i = 0; i < 40; i++) {
                net.fit(data);
            }
            double last = net.score(data);
            assertTrue(last < 0.8 * first, "dropout " + p + ": loss " + first + " → " + last);
            for (Map.Entry<String, INDArray> e : net.paramTable().entrySet()) {
                String key = e.getKey().substring(e.getKey().indexOf('_') + 1);
                if (key.equals("W") || key.equals("b")) {
                    assertBitwise(start.get(e.getKey()), e.getValue(), "dropout " + p + ": " + e.getKey());
                } else {
                    assertFalse(start.get(e.getKey()).equals(e.getValue()), "dropout " + p + ": " + e.getKey()
                            + " trained");
                }
            }
            assertTrue(net.paramTable().keySet().containsAll(List.of("0_loraMagnitude", "1_loraMagnitude",
                    "2_loraMagnitude")), "m is a parameter of each layer: " + net.paramTable().keySet());
        }
    }

    /** A LoraRnnOutputLayer with DoRA: per time step LoraLinear's map (both formats); fit trains it, W and b frozen. */
    @Test
    void anRnnOutputLayerCarriesDoraPerTimeStep() {
        for (RNNFormat format : RNNFormat.values()) {
            MultiLayerNetwork net = LoraDl4j.apply(LoraDl4jRnnTest.net(DataType.DOUBLE, format, 3), dora(2, 0), "fc0",
                    "out");
            randomize(net.getLayers(), 8);
            DataSet data = LoraDl4jRnnTest.task(DataType.DOUBLE, format, 1, 2, 4);
            List<INDArray> acts = net.feedForward(data.getFeatures(), false);   // input, fc0, lstm, fc1, out
            INDArray h = acts.get(3);                 // fc1's output [mb·T, 6], rows in DL4J's fold order
            INDArray out = acts.get(4);               // [mb, 3, T] (NCW) or [mb, T, 3] (NWC)
            INDArray folded = TimeSeriesUtils.reshape3dTo2d(format == RNNFormat.NWC ? out.permute(0, 2, 1) : out,
                    LayerWorkspaceMgr.noWorkspaces(), ArrayType.ACTIVATIONS);   // the fold DL4J unfolds h by
            assertEquals(h.rows(), folded.rows(), "one row per example and step");
            assertAgrees(Transforms.softmax(oracle(net, 3, dora(2, 0)).eval().forward(h)), folded,
                    format + ": the RnnOutputLayer's DoRA map per time step");
            MultiLayerNetwork fl = LoraDl4j.apply(LoraDl4jRnnTest.net(DataType.FLOAT, format, 3), dora(2, 0), "fc0",
                    "out");
            INDArray w = fl.getLayer(3).getParam("W").dup();
            INDArray m = fl.getLayer(3).getParam(MAGNITUDE_KEY).dup();
            DataSet train = LoraDl4jRnnTest.task(DataType.FLOAT, format, 1, 2, 8);
            for (int k = 0; k < 5; k++) {
                fl.fit(train);
            }
            assertBitwise(w, fl.getLayer(3).getParam("W"), format + ": W of the RnnOutputLayer");
            assertFalse(m.equals(fl.getLayer(3).getParam(MAGNITUDE_KEY)), format + ": its m trains");
        }
    }

    /** A LoraModel over layer0's and layer2's W and b of a {@link Nets#mln} network (its own copies). */
    private static LoraModel coreModel(MultiLayerNetwork net) {
        return LoraModel.builder()
                .linearInOut("layer0", net.getLayer(0).getParam("W").dup(), net.getLayer(0).getParam("b").dup())
                .linearInOut("layer2", net.getLayer(2).getParam("W").dup(), net.getLayer(2).getParam("b").dup())
                .build();
    }

    /** The network's output with layer0 and layer2 computed by {@code model} (eval), layer1 by the network. */
    private static INDArray coreOutput(LoraModel model, MultiLayerNetwork net, INDArray x) {
        model.eval();
        INDArray h0 = Transforms.tanh(model.forward("layer0", x));
        INDArray h1 = net.getLayer(1).activate(h0, false, LayerWorkspaceMgr.noWorkspaces());
        return Transforms.softmax(model.forward("layer2", h1));
    }

    /** A ComputationGraph: m from the graph's own (trained) W, fit with W and b bitwise unchanged, files reload. */
    @Test
    void aComputationGraphCarriesDora() throws IOException {
        ComputationGraph base = Nets.graph(DataType.DOUBLE, new Adam(0.05), 3);
        DataSet data = Nets.task(DataType.DOUBLE, 4, 5, 32);
        base.fit(data);                                   // W is no longer what the seed's weight init draws
        ComputationGraph g = LoraDl4j.apply(base, dora(2, 0.1), "fc1", "out");
        INDArray w = g.getLayer("out").getParam("W").dup();
        assertAgrees(Transforms.sqrt(Transforms.pow(w, 2).sum(0)).reshape(w.columns()),
                g.getLayer("out").getParam(MAGNITUDE_KEY), "m = column norms of the graph's W");
        Map<String, INDArray> start = new java.util.LinkedHashMap<>();
        g.paramTable().forEach((k, v) -> start.put(k, v.dup()));
        for (int i = 0; i < 10; i++) {
            g.fit(data);
        }
        for (Map.Entry<String, INDArray> e : g.paramTable().entrySet()) {
            if (e.getKey().endsWith("_W") || e.getKey().endsWith("_b")) {
                assertBitwise(start.get(e.getKey()), e.getValue(), e.getKey());
            } else {
                assertFalse(start.get(e.getKey()).equals(e.getValue()), e.getKey() + " trained");
            }
        }
        LoraDl4j.saveAdapter(g, tmp.resolve("graph"));
        ComputationGraph other = LoraDl4j.apply(base, dora(2, 0.1), "fc1", "out");
        LoraDl4j.loadAdapter(other, tmp.resolve("graph"));
        INDArray x = Nets.gaussian(6, 5, Nets.IN);
        assertBitwise(g.outputSingle(x), other.outputSingle(x), "the reloaded graph (F64 files)");
    }

    @Test
    void savedAdapterIsPeftsDoraFilesAndLoadsIntoALoraModelWithTheSameOutputs() throws IOException {
        MultiLayerNetwork net = LoraDl4j.apply(Nets.mln(DataType.DOUBLE, new Adam(0.05), 9), dora(2, 0.1),
                "layer0", "layer2");
        for (int i = 0; i < 5; i++) {
            net.fit(Nets.task(DataType.DOUBLE, 4, 5 + i, 32));
        }
        Path dir = tmp.resolve("dora");
        LoraDl4j.saveAdapter(net, dir);
        String config = Files.readString(dir.resolve("adapter_config.json"));
        assertTrue(config.contains("\"use_dora\" : true") || config.contains("\"use_dora\":true"), config);
        String header = new String(Files.readAllBytes(dir.resolve("adapter_model.safetensors")),
                java.nio.charset.StandardCharsets.ISO_8859_1);
        assertTrue(header.contains("\"base_model.model.layer0.lora_magnitude_vector\""), "PEFT's key, no .weight");
        assertFalse(header.contains("lora_magnitude_vector.weight"), "no .weight suffix");

        LoraModel model = coreModel(net);
        model.load(dir, "default");
        INDArray x = Nets.gaussian(8, 6, Nets.IN);
        assertAgrees(coreOutput(model, net, x), net.output(x), "LoraModel loaded from lora-dl4j's DoRA files");
        for (int i : new int[] {0, 2}) {
            assertBitwise(net.getLayer(i).getParam(MAGNITUDE_KEY), model.module("layer" + i).adapter("default")
                    .magnitude(), "m, F64");
        }
    }

    @Test
    void aLoraModelsDoraFilesLoadIntoANetworkWithTheSameOutputs() throws IOException {
        MultiLayerNetwork base = Nets.mln(DataType.DOUBLE, new Adam(0.05), 9);
        LoraModel model = coreModel(base);
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(5).useDora(true).seed(4).build();
        model.applyLora(cfg, List.of("layer0", "layer2"));
        long seed = 40;
        for (String name : List.of("layer0", "layer2")) {
            LoraLinear m = model.module(name);
            LoraAdapter a = m.adapter("default");
            m.setAdapterWeights("default", a.a(), Nets.gaussian(seed++, (int) m.outFeatures(), 2).muli(0.2),
                    a.magnitude().mul(1.1));
        }
        Path dir = tmp.resolve("core");
        model.save(dir, "default");

        MultiLayerNetwork net = LoraDl4j.apply(base, dora(2, 0), "layer0", "layer2");
        LoraDl4j.loadAdapter(net, dir);
        model = coreModel(base);                         // the file's values (LoraModel.save writes F32)
        model.load(dir, "default");
        INDArray x = Nets.gaussian(8, 6, Nets.IN);
        assertAgrees(coreOutput(model, net, x), net.output(x), "network with the LoraModel's file");
        assertEquals(5.0, net.getLayer(0).conf().getLayer() instanceof LoraLayerConf c ? c.lora().getAlpha() : 0,
                "alpha from the file");

        LoraDl4j.saveAdapter(net, tmp.resolve("again"));
        MultiLayerNetwork other = LoraDl4j.apply(base, dora(2, 0), "layer0", "layer2");
        LoraDl4j.loadAdapter(other, tmp.resolve("again"));
        assertBitwise(net.params(), other.params(), "a DOUBLE network's DoRA adapter reloads bit for bit");
    }

    @Test
    void aDoraFileIntoALoraNetworkAndTheOtherWayAreRefusedWithNothingChanged() throws IOException {
        MultiLayerNetwork base = Nets.mln(DataType.FLOAT, new Adam(0.01), 7);
        MultiLayerNetwork doraNet = LoraDl4j.apply(base, dora(2, 0), "layer0");
        MultiLayerNetwork loraNet = LoraDl4j.apply(base, LoraConfig.builder().rank(2).alpha(3).build(), "layer0");
        randomize(doraNet.getLayers(), 1);
        randomize(loraNet.getLayers(), 2);
        LoraDl4j.saveAdapter(doraNet, tmp.resolve("dora"));
        LoraDl4j.saveAdapter(loraNet, tmp.resolve("lora"));
        INDArray loraBefore = loraNet.params().dup();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraDl4j.loadAdapter(loraNet, tmp.resolve("dora")));
        assertTrue(e.getMessage().contains("is DoRA (use_dora: true") && e.getMessage().contains("nothing was loaded"),
                e.getMessage());
        assertBitwise(loraBefore, loraNet.params(), "LoRA network after the refused DoRA file");
        INDArray doraBefore = doraNet.params().dup();
        e = assertThrows(IllegalArgumentException.class, () -> LoraDl4j.loadAdapter(doraNet, tmp.resolve("lora")));
        assertTrue(e.getMessage().contains("is plain LoRA") && e.getMessage().contains("nothing was loaded"),
                e.getMessage());
        assertBitwise(doraBefore, doraNet.params(), "DoRA network after the refused LoRA file");
    }

    @Test
    void applyRefusesAWeightWithAZeroColumnByName() {
        MultiLayerNetwork base = Nets.mln(DataType.FLOAT, new Adam(0.01), 7);
        base.getLayer(0).getParam("W").getColumn(3).assign(0);
        INDArray before = base.params().dup();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraDl4j.apply(base, dora(2, 0), "layer0"));
        assertTrue(e.getMessage().contains("non-zero norm") && e.getMessage().contains("column 3"), e.getMessage());
        assertBitwise(before, base.params(), "the given network is not changed");
    }

    @Test
    void mergeUnmergeAndUnloadAreLoraCoresExactDoraMerge() throws IOException {
        MultiLayerNetwork net = LoraDl4j.apply(Nets.mln(DataType.DOUBLE, new Adam(0.01), 7), dora(3, 0), "layer0",
                "layer2");
        randomize(net.getLayers(), 5);
        INDArray x = Nets.gaussian(3, 9, Nets.IN);
        INDArray y = net.output(x);
        INDArray w0 = net.getLayer(0).getParam("W").dup();
        INDArray expectedMerged = oracle(net, 0, dora(3, 0)).mergedWeight();
        LoraDl4j.merge(net);
        assertBitwise(expectedMerged, net.getLayer(0).getParam("W").dup('c'), "W = c ⊙ (W + s·(B A)ᵀ), lora-core's");
        assertAgrees(y, net.output(x), "merged output");
        MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(net);
        assertAgrees(y, plain.output(x), "mergeAndUnload of a merged network");

        File zip = tmp.resolve("merged.zip").toFile();
        ModelSerializer.writeModel(net, zip, true);
        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(zip, true);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> LoraDl4j.unmerge(restored));
        assertTrue(e.getMessage().contains("DoRA") && e.getMessage().contains("mergeAndUnload"), e.getMessage());

        LoraDl4j.unmerge(net);
        assertBitwise(w0, net.getLayer(0).getParam("W"), "unmerge restores W bit for bit");
        assertBitwise(y, net.output(x), "and the output");
        assertAgrees(y, LoraDl4j.mergeAndUnload(net).output(x), "mergeAndUnload of an unmerged network");

        ModelSerializer.writeModel(net, zip, true);
        MultiLayerNetwork back = ModelSerializer.restoreMultiLayerNetwork(zip, true);
        assertTrue(((LoraLayer) back.getLayer(0)).loraConf().lora().isUseDora(), "useDora saved with the network");
        assertBitwise(net.params(), back.params(), "parameters, m included");
        assertBitwise(y, back.output(x), "the restored network computes DoRA");
    }
}
