package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_A_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_B_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.MAGNITUDE_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.WEIGHT_KEY;

import io.github.lora4j.AllOrNothing;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.TargetModules;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.AdapterTensors;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.io.PeftAdapterLayout;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.api.OptimizationAlgorithm;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.graph.FrozenVertex;
import org.deeplearning4j.nn.conf.graph.GraphVertex;
import org.deeplearning4j.nn.conf.graph.LayerVertex;
import org.deeplearning4j.nn.conf.layers.BaseLayer;
import org.deeplearning4j.nn.conf.layers.BaseOutputLayer;
import org.deeplearning4j.nn.conf.layers.BasePretrainNetwork;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.BaseRecurrentLayer;
import org.deeplearning4j.nn.conf.layers.ConvolutionLayer;
import org.deeplearning4j.nn.conf.layers.EmbeddingLayer;
import org.deeplearning4j.nn.conf.layers.EmbeddingSequenceLayer;
import org.deeplearning4j.nn.conf.layers.LocallyConnected1D;
import org.deeplearning4j.nn.conf.layers.LocallyConnected2D;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.conf.layers.recurrent.Bidirectional;
import org.deeplearning4j.nn.conf.layers.samediff.AbstractSameDiffLayer;
import org.deeplearning4j.nn.conf.layers.samediff.SameDiffOutputLayer;
import org.deeplearning4j.nn.conf.layers.wrapper.BaseWrapperLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayerWithBackprop;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.NoOp;

/**
 * LoRA for DL4J networks: turns the {@code DenseLayer}s, {@code OutputLayer}s and {@code RnnOutputLayer}s of a
 * {@link MultiLayerNetwork} or {@link ComputationGraph} into LoRA layers that the network's own {@code fit()} trains.
 * The guide is {@code docs/dl4j.md}.
 *
 * <pre>{@code
 * MultiLayerNetwork lora = LoraDl4j.apply(net, LoraConfig.builder().rank(4).alpha(8).build(), "layer0", "layer1");
 * lora.fit(trainIterator);                       // trains loraA and loraB only; W and b stay bitwise unchanged
 * System.out.print(LoraDl4j.summary(lora));      // not lora.summary(): see "Parameter counts"
 * LoraDl4j.saveAdapter(lora, dir);               // PEFT files, module paths = layer names
 * MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(lora);   // DL4J's own layers, W + s·(B A)ᵀ
 * }</pre>
 *
 * <h2>What apply builds</h2>
 * A new network (the given one is not changed, parameters and updater state included) in which
 * <ul>
 *   <li>each targeted layer is a {@link LoraDenseLayer} / {@link LoraOutputLayer} / {@link LoraRnnOutputLayer} with
 *       the same activation, loss, input dropout, updater (and, for the last, data format and masks), frozen
 *       {@code W [nIn, nOut]} and {@code b [nOut]}, and trainable {@code loraA [r, nIn]} and {@code loraB [nOut, r]}
 *       ({@code loraB = 0}, so its output equals the given network's bit for bit);</li>
 *   <li>every other layer with parameters is frozen: dense and output layers become LoRA layers without adapter
 *       (their backward computes {@code dL/dx} only); a {@code BatchNormalization} becomes a
 *       {@link FrozenBatchNormalization} (inference mode, statistics unchanged); other layers (convolutions,
 *       recurrent layers, embeddings, SameDiff layers such as {@code SelfAttentionLayer}, wrappers) are wrapped in
 *       DL4J's {@link FrozenLayerWithBackprop} over a copy with NoOp updaters and without regularization, input
 *       dropout or weight noise; layers without parameters stay as they are. Their parameters stay bitwise unchanged
 *       through {@code fit()}. Refused, by name and reason: output layers with parameters other than these three
 *       (e.g. {@code CenterLossOutputLayer}), pretraining layers ({@code AutoEncoder},
 *       {@code VariationalAutoencoder}), and layer kinds lora4j cannot freeze; docs/dl4j.md has the table;</li>
 *   <li>layers frozen already stay as they are: a {@link FrozenLayerWithBackprop}, and TransferLearning's
 *       {@link FrozenLayer} (and, in a graph, {@link FrozenVertex}) below every adapted layer. Those pass no gradient
 *       (or, around a BatchNormalization, a wrong one), so one above an adapted layer is frozen the lora4j way instead
 *       (a layer or vertex without parameters is unwrapped), and a targeted frozen layer is adapted;
 *       {@link #mergeAndUnload} gives the wrappers back;</li>
 *   <li>the updater therefore holds state for {@code loraA} and {@code loraB} alone:
 *       {@code updater.stateSize(Σ r·(nIn + nOut))} elements.</li>
 * </ul>
 * Listeners are not copied; iteration and epoch counts start at 0.
 *
 * <h2>Targets</h2>
 * Layer names (a name matches a layer whose name equals it or ends with {@code "." + name}, PEFT's rule), layer
 * indices of a {@link MultiLayerNetwork} ({@code "0"}), or a {@link Pattern} that must match the whole name. Every
 * name must match a layer, and every matched layer must be a {@code DenseLayer}, {@code OutputLayer} or
 * {@code RnnOutputLayer} (inside a frozen wrapper or not); a {@code DenseLayer} inside a recurrent network (DL4J's
 * {@code RnnToFeedForwardPreProcessor} folds the time steps) carries LoRA like any. Other types are refused with the
 * reason (an LSTM's input weight stacks its four gates, a convolution's is a kernel, ...). Adapters are keyed by layer
 * name (the PEFT module paths), so two targeted layers may not share one.
 *
 * <h2>Training</h2>
 * With DL4J's default {@code STOCHASTIC_GRADIENT_DESCENT} and any updater. The line-search solvers
 * ({@code LINE_GRADIENT_DESCENT}, {@code CONJUGATE_GRADIENT}, {@code LBFGS}) are refused by {@code apply}: they step
 * the network's whole parameter vector along their own search direction and write it back past the per-parameter
 * updater, the NoOp that keeps {@code W} and {@code b} frozen, so nothing would keep {@code W} bitwise unchanged.
 *
 * <p>A configuration's {@link LoraConfig#dropout() dropout} acts as PEFT's {@code lora_dropout}: in training only,
 * the LoRA path computes {@code B(A(dropout(x)))} while the base path sees {@code x} (after the layer's own
 * {@code dropOut}); one mask per input, shared by DL4J's forward, backward and score, drawn as lora-core's
 * {@code LoraLinear} draws it for the layer's configuration ({@link io.github.lora4j.DropoutStream}), so training
 * repeats bit for bit.
 *
 * <h2>Parameter counts</h2>
 * DL4J's {@code summary()} counts a layer's parameters as frozen only when the layer is TransferLearning's
 * {@code FrozenLayer}; a LoRA layer holds frozen {@code W}, {@code b} beside trainable {@code loraA}, {@code loraB},
 * and the other frozen layers must pass gradients, so on a LoRA network it says every parameter is trainable and 0 are
 * frozen. Use {@link #summary}, {@link #trainableParametersReport}, {@link #trainableParameterCount} and
 * {@link #totalParameterCount} instead.
 *
 * <h2>DoRA</h2>
 * With {@link LoraConfig#useDora()} each adapted layer also has the trainable magnitude {@code loraMagnitude [nOut]}
 * (PEFT's {@code lora_magnitude_vector}), set by {@code apply} to the column norms of its {@code W}, and computes
 * {@code (m / ‖W + s·B·A‖) ⊙ (x W + s·(x Aᵀ) Bᵀ) + b} as lora-core's {@code LoraLinear} does (docs/dora.md);
 * {@link #saveAdapter}, {@link #loadAdapter}, {@link #merge}, {@link #unmerge} and {@link #mergeAndUnload} handle it.
 *
 * <h2>Threading</h2>
 * As DL4J networks themselves: one thread at a time. {@link #merge} and {@link #unmerge} change {@code W} in place
 * and must not run while another thread calls {@code output()} or {@code fit()} on the same network.
 *
 * <h2>Errors</h2>
 * Bad arguments throw {@link IllegalArgumentException}, calls in the wrong state {@link IllegalStateException};
 * each names what was expected and what came, and leaves the networks as they were.
 */
public final class LoraDl4j {

    private LoraDl4j() {
    }

    // ---------------------------------------------------------------- apply

    /**
     * A copy of {@code net} with LoRA on the layers named by {@code targets} (names or indices).
     *
     * @param net     an initialised network of data type FLOAT or DOUBLE; not changed
     * @param config  the adapter configuration; its dropout acts on the LoRA path's input in training, after the
     *                layer's own {@code dropOut}
     * @param targets at least one layer name or index
     * @return a new, initialised network
     * @throws IllegalArgumentException for a target naming no layer, a targeted layer without a linear weight, two
     *                                  targeted layers with one name, an unsupported data type, a scaling that is
     *                                  not finite in the network's data type, a line-search {@code optimizationAlgo},
     *                                  a frozen layer lora4j cannot pass gradients through (a BatchNormalization
     *                                  above an adapted layer), or, for DoRA, a targeted {@code W} with a zero column
     *                                  (any rank {@code >= 1} is accepted, above {@code min(nIn, nOut)} too)
     * @throws IllegalStateException    if {@code net} is not initialised or already has LoRA layers
     */
    public static MultiLayerNetwork apply(MultiLayerNetwork net, LoraConfig config, String... targets) {
        Objects.requireNonNull(net, "net must not be null");
        return apply(net, config, byNames(slots(net), targets));
    }

    /**
     * {@link #apply(MultiLayerNetwork, LoraConfig, String...)} on the layers whose whole name matches {@code regex}.
     *
     * @param net    an initialised network of data type FLOAT or DOUBLE; not changed
     * @param config the adapter configuration
     * @param regex  must match a whole layer name ({@code Matcher.matches})
     * @return a new, initialised network
     * @throws IllegalArgumentException if the regex matches no layer, or as the other {@code apply}
     * @throws IllegalStateException    as the other {@code apply}
     */
    public static MultiLayerNetwork apply(MultiLayerNetwork net, LoraConfig config, Pattern regex) {
        Objects.requireNonNull(net, "net must not be null");
        return apply(net, config, byRegex(slots(net), regex));
    }

    /**
     * A copy of {@code graph} with LoRA on the layer vertices named by {@code targets}; as
     * {@link #apply(MultiLayerNetwork, LoraConfig, String...)}.
     *
     * @param graph   an initialised graph of data type FLOAT or DOUBLE; not changed
     * @param config  the adapter configuration
     * @param targets at least one vertex name
     * @return a new, initialised graph
     * @throws IllegalArgumentException for a target naming no layer vertex, or as
     *                                  {@link #apply(MultiLayerNetwork, LoraConfig, String...)}
     * @throws IllegalStateException    if {@code graph} is not initialised or already has LoRA layers
     */
    public static ComputationGraph apply(ComputationGraph graph, LoraConfig config, String... targets) {
        Objects.requireNonNull(graph, "graph must not be null");
        return apply(graph, config, byNames(slots(graph), targets));
    }

    /**
     * {@link #apply(ComputationGraph, LoraConfig, String...)} on the vertices whose whole name matches {@code regex}.
     *
     * @param graph  an initialised graph of data type FLOAT or DOUBLE; not changed
     * @param config the adapter configuration
     * @param regex  must match a whole vertex name
     * @return a new, initialised graph
     * @throws IllegalArgumentException if the regex matches no layer vertex, or as the other {@code apply}
     * @throws IllegalStateException    as the other {@code apply}
     */
    public static ComputationGraph apply(ComputationGraph graph, LoraConfig config, Pattern regex) {
        Objects.requireNonNull(graph, "graph must not be null");
        return apply(graph, config, byRegex(slots(graph), regex));
    }

    private static MultiLayerNetwork apply(MultiLayerNetwork net, LoraConfig config, List<Slot> targeted) {
        MultiLayerConfiguration conf = net.getLayerWiseConfigurations();
        List<Slot> slots = slots(net);
        checkNetwork(net.getLayers() != null, conf.getDataType(), slots);
        for (Slot s : slots) {
            checkOptimizer(conf.getConf(s.index()), "layer " + s);
        }
        // A TransferLearning FrozenLayer does not backpropagate: one above an adapted layer must pass gradients.
        int lowest = targeted.stream().mapToInt(Slot::index).min().orElse(Integer.MAX_VALUE);
        Set<Integer> passGradients = new HashSet<>();
        slots.stream().filter(s -> s.index() > lowest).forEach(s -> passGradients.add(s.index()));
        Map<Integer, Layer> replaced = plan(slots, targeted, config, passGradients);
        MultiLayerConfiguration c = conf.clone();
        c.setIterationCount(0);
        c.setEpochCount(0);
        replaced.forEach((i, layer) -> c.getConf(i).setLayer(layer));
        MultiLayerNetwork out = new MultiLayerNetwork(c);
        out.init();
        for (int i = 0; i < net.getnLayers(); i++) {
            copyParams(net.getLayer(i).paramTable(), out.getLayer(i).paramTable());
        }
        initMagnitudes(out);
        return out;
    }

    /**
     * Sets each DoRA layer's magnitude to PEFT's initial value for the copied {@code W}: the new network's
     * initialisation computed it for the {@code W} its weight init drew, before the given network's {@code W} was
     * copied in.
     *
     * @throws IllegalArgumentException if a column of a targeted {@code W} is zero (DoRA's direction is undefined)
     */
    private static void initMagnitudes(Model out) {
        for (Map.Entry<String, LoraLayer> e : adapted(out).entrySet()) {
            LoraLayerConf c = e.getValue().loraConf();
            if (LoraParamInitializer.isDora(c)) {
                Map<String, INDArray> p = e.getValue().paramTable();
                try {
                    p.get(MAGNITUDE_KEY).assign(LoraParamInitializer.initialAdapter(e.getKey(), p.get(WEIGHT_KEY),
                            c.loraConfig())[2]);
                } catch (IllegalArgumentException ex) {
                    throw new IllegalArgumentException("DoRA on layer '" + e.getKey() + "': " + ex.getMessage(), ex);
                }
            }
        }
    }

    private static ComputationGraph apply(ComputationGraph graph, LoraConfig config, List<Slot> targeted) {
        ComputationGraphConfiguration conf = graph.getConfiguration();
        List<Slot> slots = slots(graph);
        checkNetwork(graph.getLayers() != null, conf.getDataType(), slots);
        checkOptimizer(conf.getDefaultConfiguration(), "the graph's default configuration");
        for (Slot s : slots) {
            checkOptimizer(layerConf(conf, s.name()), "layer " + s);
        }
        // TransferLearning's FrozenLayer and FrozenVertex do not backpropagate: one downstream of an adapted layer
        // must pass gradients to it.
        Set<String> targetNames = new HashSet<>();
        targeted.forEach(s -> targetNames.add(s.name()));
        Set<Integer> passGradients = new HashSet<>();
        slots.stream().filter(s -> downstreamOf(conf, s.name(), targetNames)).forEach(s -> passGradients.add(s.index()));
        List<String> frozenVertices = new ArrayList<>();
        for (Map.Entry<String, GraphVertex> e : conf.getVertices().entrySet()) {
            if (e.getValue() instanceof FrozenVertex && downstreamOf(conf, e.getKey(), targetNames)) {
                if (((FrozenVertex) e.getValue()).getUnderlying().numParams(true) > 0) {
                    throw new IllegalArgumentException("vertex '" + e.getKey() + "' is a FrozenVertex with parameters "
                            + "downstream of an adapted layer: it passes no gradient to it, and unwrapping it would "
                            + "unfreeze its parameters; expected adapted layers downstream of frozen vertices only");
                }
                frozenVertices.add(e.getKey());
            }
        }
        Map<Integer, Layer> replaced = plan(slots, targeted, config, passGradients);
        ComputationGraphConfiguration c = conf.clone();
        c.setIterationCount(0);
        c.setEpochCount(0);
        replaced.forEach((i, layer) -> layerConf(c, slots.get(i).name()).setLayer(layer));
        for (String v : frozenVertices) {       // a vertex without parameters: unwrapped, it freezes nothing
            c.getVertices().put(v, ((FrozenVertex) c.getVertices().get(v)).getUnderlying());
        }
        ComputationGraph out = new ComputationGraph(c);
        out.init();
        for (Slot s : slots) {
            copyParams(graph.getLayer(s.name()).paramTable(), out.getLayer(s.name()).paramTable());
        }
        initMagnitudes(out);
        return out;
    }

    /** Whether vertex {@code name} of {@code conf} reads, directly or through other vertices, one of {@code sources}. */
    private static boolean downstreamOf(ComputationGraphConfiguration conf, String name, Set<String> sources) {
        Set<String> seen = new HashSet<>();
        List<String> todo = new ArrayList<>(conf.getVertexInputs().getOrDefault(name, List.of()));
        while (!todo.isEmpty()) {
            String v = todo.remove(todo.size() - 1);
            if (sources.contains(v)) {
                return true;
            }
            if (seen.add(v)) {
                todo.addAll(conf.getVertexInputs().getOrDefault(v, List.of()));
            }
        }
        return false;
    }

    /**
     * The new configuration of every layer that changes, by slot index; validates everything first. An untargeted
     * frozen layer stays as it is, unless it is a TransferLearning {@link FrozenLayer} in {@code passGradients} (above
     * an adapted layer, to which it would pass no gradient): that one is frozen the lora4j way instead.
     */
    private static Map<Integer, Layer> plan(List<Slot> slots, List<Slot> targeted, LoraConfig config,
                                            Set<Integer> passGradients) {
        Objects.requireNonNull(config, "config must not be null");
        LoraSettings settings = LoraSettings.of(config);
        refuseSharedNames(targeted);
        targeted.forEach(LoraDl4j::requireLinear);   // any rank >= 1 (LoraConfig's rule), as in PEFT
        Set<Integer> targetIndices = new HashSet<>();
        targeted.forEach(s -> targetIndices.add(s.index()));
        Map<Integer, Layer> out = new LinkedHashMap<>();
        for (Slot s : slots) {
            if (targetIndices.contains(s.index())) {
                out.put(s.index(), loraLayer(s, settings));
                continue;
            }
            Layer replacement = untargeted(s, passGradients.contains(s.index()));
            if (replacement != null) {
                out.put(s.index(), replacement);
            }
        }
        return out;
    }

    /**
     * What an untargeted layer becomes, or null if it stays as it is. Frozen, always: a dense or output layer becomes a
     * LoRA layer without adapter, a BatchNormalization a {@link FrozenBatchNormalization}, another layer with
     * parameters DL4J's {@link FrozenLayerWithBackprop} over a copy whose updaters are NoOp and whose regularization,
     * dropout and weight noise are off; a layer without parameters passes through unchanged. A layer frozen already
     * stays as it is, unless it sits above an adapted layer ({@code passGradients}) and would pass it no (or a wrong)
     * gradient: a TransferLearning {@link FrozenLayer}, or a frozen BatchNormalization.
     *
     * @throws IllegalArgumentException for a layer lora4j cannot freeze, by name and reason
     */
    private static Layer untargeted(Slot s, boolean passGradients) {
        Layer inner = s.layer();
        boolean wrapped = s.original() != inner;
        if (wrapped && (!passGradients || (s.original() instanceof FrozenLayerWithBackprop
                && !(inner instanceof BatchNormalization)))) {
            return null;                  // frozen already, and passes what it must
        }
        if (isLinear(inner) && linearProblem(inner) == null) {
            return loraLayer(s, null);
        }
        if (inner.initializer().numParams(inner) == 0) {
            return wrapped ? inner.clone() : null;      // unwrapped: a FrozenLayer passes no gradient
        }
        if (inner instanceof BatchNormalization) {
            return new FrozenBatchNormalization((BatchNormalization) inner, s.original());
        }
        String refusal = freezeRefusal(inner);
        if (refusal != null) {
            throw new IllegalArgumentException("cannot freeze untargeted layer " + s + " ("
                    + inner.getClass().getSimpleName() + (wrapped ? " inside " + s.original().getClass().getSimpleName()
                    + ", above an adapted layer to which it must pass gradients" : "") + "): " + refusal
                    + "; target it if it is a DenseLayer, OutputLayer or RnnOutputLayer, or remove it. The network is "
                    + "unchanged");
        }
        Layer copy = inner.clone();
        freeze(copy);
        FrozenLayerWithBackprop frozen = new FrozenLayerWithBackprop(copy);
        frozen.setLayerName(inner.getLayerName());          // the wrapper has none of its own: keep the layer's
        return frozen;
    }

    /**
     * Why DL4J's {@link FrozenLayerWithBackprop} cannot freeze {@code layer} (with parameters, not dense or output),
     * or null if it can.
     */
    private static String freezeRefusal(Layer layer) {
        if (layer instanceof BaseOutputLayer || layer instanceof SameDiffOutputLayer) {
            return "an output layer with parameters that is not a plain OutputLayer or RnnOutputLayer; DL4J's "
                    + "FrozenLayerWithBackprop is no output layer, and left as it is its parameters would train";
        }
        if (layer instanceof BasePretrainNetwork) {
            return "a pretraining layer: DL4J's FrozenLayerWithBackprop sizes its parameters without the pretraining "
                    + "ones (visible bias, decoder), so it cannot wrap it";
        }
        if (!canFreeze(layer)) {
            return "lora4j cannot switch off the updater and regularization of its parameters (it knows DL4J's "
                    + "BaseLayer, SameDiff layers, wrappers and Bidirectional), so fit() could change them";
        }
        return null;
    }

    private static boolean canFreeze(Layer layer) {
        if (layer instanceof BaseLayer || layer instanceof AbstractSameDiffLayer) {
            return true;
        }
        if (layer instanceof BaseWrapperLayer) {
            return canFreeze(((BaseWrapperLayer) layer).getUnderlying());
        }
        if (layer instanceof Bidirectional) {
            return canFreeze(((Bidirectional) layer).getFwd()) && canFreeze(((Bidirectional) layer).getBwd());
        }
        return false;
    }

    /**
     * Switches off, in place, what could change a frozen layer's parameters in {@code fit()} although its gradient
     * view stays zero (DL4J's updater reads the inner layer's settings): updaters become NoOp (no state), regularization
     * (L1, L2, weight decay) goes; and what would make its backward differ from its inference-mode forward (DL4J's
     * FrozenLayerWithBackprop runs the layer in inference mode, but some layers recompute the forward in training
     * mode in backprop): input dropout and weight noise go.
     */
    private static void freeze(Layer layer) {
        layer.setIDropout(null);
        if (layer instanceof BaseLayer) {
            BaseLayer b = (BaseLayer) layer;
            b.setIUpdater(new NoOp());
            b.setBiasUpdater(new NoOp());
            b.setRegularization(Collections.emptyList());
            b.setRegularizationBias(Collections.emptyList());
            b.setWeightNoise(null);
        } else if (layer instanceof AbstractSameDiffLayer) {
            AbstractSameDiffLayer d = (AbstractSameDiffLayer) layer;
            d.setUpdater(new NoOp());
            d.setBiasUpdater(new NoOp());
            d.setRegularization(Collections.emptyList());
            d.setRegularizationBias(Collections.emptyList());
        } else if (layer instanceof BaseWrapperLayer) {
            freeze(((BaseWrapperLayer) layer).getUnderlying());
        } else if (layer instanceof Bidirectional) {
            freeze(((Bidirectional) layer).getFwd());
            freeze(((Bidirectional) layer).getBwd());
        }
    }

    /**
     * The LoRA form of the layer in {@code s} (inside a frozen wrapper, if any); it remembers the configuration as the
     * network had it (the wrapper too), which {@link #mergeAndUnload} gives back.
     */
    private static Layer loraLayer(Slot s, LoraSettings settings) {
        LoraLayerConf lora;
        if (s.layer() instanceof OutputLayer) {
            lora = new LoraOutputLayer((OutputLayer) s.layer(), settings);
        } else if (s.layer() instanceof RnnOutputLayer) {
            lora = new LoraRnnOutputLayer((RnnOutputLayer) s.layer(), settings);
        } else {
            lora = new LoraDenseLayer((DenseLayer) s.layer(), settings);
        }
        if (s.original() != s.layer()) {
            lora.getState().setBase(s.original().clone());
        }
        return (Layer) lora;
    }

    /**
     * Refuses two targeted layers with one name: lora4j keys the adapters of a network by layer name (the PEFT module
     * paths of {@link #saveAdapter}, {@link #loadAdapter}), so the second would be lost or overwritten.
     */
    private static void refuseSharedNames(List<Slot> targeted) {
        Map<String, Slot> byName = new LinkedHashMap<>();
        for (Slot s : targeted) {
            Slot other = byName.putIfAbsent(s.name(), s);
            if (other != null) {
                throw new IllegalArgumentException("layers " + other + " and " + s + " share the name '" + s.name()
                        + "'; lora4j keys adapters by layer name (the module paths of saveAdapter and loadAdapter), "
                        + "so each adapted layer needs its own. Expected distinct names: name the layers (.name(...)) "
                        + "or target one of them; the network is unchanged");
            }
        }
    }

    /**
     * Refuses DL4J's line-search solvers: they move the network's whole flat parameter vector along their own search
     * direction and write it back with {@code setParams}, bypassing the per-parameter NoOp updater that keeps
     * {@code W} and {@code b} frozen, so nothing would hold {@code W} bitwise unchanged (a {@code 0·∞} in a search
     * direction, or {@code −0.0 + 0.0}, changes it).
     */
    private static void checkOptimizer(NeuralNetConfiguration conf, String where) {
        OptimizationAlgorithm algo = conf.getOptimizationAlgo();
        if (algo != null && algo != OptimizationAlgorithm.STOCHASTIC_GRADIENT_DESCENT) {
            throw new IllegalArgumentException(where + " is configured with optimizationAlgo " + algo + "; lora-dl4j "
                    + "trains with STOCHASTIC_GRADIENT_DESCENT (DL4J's default) only: the line-search solvers "
                    + "(LINE_GRADIENT_DESCENT, CONJUGATE_GRADIENT, LBFGS) step the whole parameter vector, frozen W "
                    + "and b included, past the updater that keeps them frozen. Expected the default optimizationAlgo; "
                    + "the network is unchanged");
        }
    }

    /** The layer types that carry LoRA: one linear map {@code x W + b} (per row, or per time step). */
    private static boolean isLinear(Layer layer) {
        return layer.getClass() == DenseLayer.class || layer.getClass() == OutputLayer.class
                || layer.getClass() == RnnOutputLayer.class;
    }

    /** Why a DenseLayer/OutputLayer cannot become a LoRA layer, or null. */
    private static String linearProblem(Layer layer) {
        if (layer instanceof DenseLayer && ((DenseLayer) layer).hasLayerNorm()) {
            return "layer norm";
        }
        if (((BaseLayer) layer).getWeightNoise() != null) {
            return "weight noise " + ((BaseLayer) layer).getWeightNoise();
        }
        if (layer.getConstraints() != null && !layer.getConstraints().isEmpty()) {
            return "constraints " + layer.getConstraints();
        }
        return null;
    }

    private static void requireLinear(Slot s) {
        if (s.layer() instanceof LoraLayerConf) {
            throw new IllegalStateException("layer " + s + " is already a LoRA layer; apply LoRA to the base network");
        }
        if (!isLinear(s.layer())) {
            throw new IllegalArgumentException("layer " + s + " is a " + s.layer().getClass().getSimpleName()
                    + ": expected a DenseLayer, OutputLayer or RnnOutputLayer (one linear map x W + b, W [nIn, nOut]); "
                    + targetRefusal(s.layer()) + ". The network is unchanged");
        }
        String problem = linearProblem(s.layer());
        if (problem != null) {
            throw new IllegalArgumentException("layer " + s + " has " + problem
                    + ": expected a plain DenseLayer, OutputLayer or RnnOutputLayer, which a LoRA layer with frozen W "
                    + "reproduces");
        }
    }

    /** Why a layer of another type carries no LoRA in lora-dl4j. */
    private static String targetRefusal(Layer layer) {
        if (layer instanceof ConvolutionLayer || layer instanceof LocallyConnected1D
                || layer instanceof LocallyConnected2D) {
            return "a convolution's weight is a kernel, not one linear map (lora-core's LoraConv2d adapts conv2d "
                    + "weights; lora-dl4j does not adapt DL4J's convolution layers)";
        }
        if (layer instanceof BaseRecurrentLayer || layer instanceof Bidirectional) {
            return "a recurrent layer's input weight stacks its gates' (or the recurrence's) maps, so no single "
                    + "linear map x W + b takes its place";
        }
        if (layer instanceof EmbeddingLayer || layer instanceof EmbeddingSequenceLayer) {
            return "an embedding is a lookup (lora-core's LoraEmbedding adapts embeddings; lora-dl4j does not adapt "
                    + "DL4J's embedding layers)";
        }
        if (layer instanceof BaseOutputLayer) {
            return "this output layer adds to the linear map (parameters or loss terms of its own)";
        }
        if (layer instanceof AbstractSameDiffLayer) {
            return "a SameDiff-defined layer keeps its weights in its own graph";
        }
        if (layer instanceof BaseWrapperLayer) {
            return "a wrapper: lora-dl4j adapts the three layer types unwrapped only";
        }
        return "it has no such weight";
    }

    private static void checkNetwork(boolean initialised, DataType type, List<Slot> slots) {
        if (!initialised) {
            throw new IllegalStateException("the network is not initialised: call init() before LoraDl4j.apply");
        }
        if (type != DataType.FLOAT && type != DataType.DOUBLE) {
            throw new IllegalArgumentException("expected a network of data type FLOAT or DOUBLE, got " + type);
        }
        for (Slot s : slots) {
            if (s.layer() instanceof LoraLayerConf) {
                throw new IllegalStateException("layer " + s + " is already a LoRA layer; apply LoRA to the base "
                        + "network (or use loadAdapter to replace the adapter)");
            }
        }
    }

    private static void copyParams(Map<String, INDArray> from, Map<String, INDArray> to) {
        for (Map.Entry<String, INDArray> e : from.entrySet()) {
            to.get(e.getKey()).assign(e.getValue());
        }
    }

    // ---------------------------------------------------------------- targets

    /**
     * One layer of a network: its index (MultiLayerNetwork) or position among the graph's layer vertices, its name,
     * its configuration ({@code layer}: inside a frozen wrapper, if any; {@code original}: as the network has it), and
     * whether it may be targeted by index.
     */
    private record Slot(int index, String name, Layer layer, Layer original, boolean byIndex) {
        @Override
        public String toString() {
            return "'" + name + "'" + (byIndex ? " (index " + index + ")" : "");
        }
    }

    private static List<Slot> slots(MultiLayerNetwork net) {
        List<Slot> out = new ArrayList<>();
        MultiLayerConfiguration conf = net.getLayerWiseConfigurations();
        for (int i = 0; i < conf.getConfs().size(); i++) {
            Layer l = conf.getConf(i).getLayer();
            out.add(new Slot(i, l.getLayerName() == null ? String.valueOf(i) : l.getLayerName(), unwrapFrozen(l), l,
                    true));
        }
        return out;
    }

    private static List<Slot> slots(ComputationGraph graph) {
        List<Slot> out = new ArrayList<>();
        for (Map.Entry<String, GraphVertex> e : graph.getConfiguration().getVertices().entrySet()) {
            if (e.getValue() instanceof LayerVertex) {
                Layer l = ((LayerVertex) e.getValue()).getLayerConf().getLayer();
                out.add(new Slot(out.size(), e.getKey(), unwrapFrozen(l), l, false));
            }
        }
        return out;
    }

    /** The layer inside DL4J's frozen wrappers (TransferLearning's FrozenLayer, FrozenLayerWithBackprop), or {@code l}. */
    private static Layer unwrapFrozen(Layer l) {
        Layer inner = l;
        while (true) {
            if (inner instanceof FrozenLayer) {
                inner = ((FrozenLayer) inner).getLayer();
            } else if (inner instanceof FrozenLayerWithBackprop) {
                inner = ((FrozenLayerWithBackprop) inner).getUnderlying();
            } else {
                return inner;
            }
        }
    }

    private static NeuralNetConfiguration layerConf(ComputationGraphConfiguration c, String name) {
        return ((LayerVertex) c.getVertices().get(name)).getLayerConf();
    }

    /** PEFT's rule for names (equal, or a suffix after a dot), plus MultiLayerNetwork indices; each must match. */
    private static List<Slot> byNames(List<Slot> slots, String... targets) {
        Objects.requireNonNull(targets, "targets must not be null");
        if (targets.length == 0) {
            throw new IllegalArgumentException("expected at least one target layer name; layers: " + slots);
        }
        List<Slot> out = new ArrayList<>();
        for (String t : targets) {
            if (t == null || t.isBlank()) {
                throw new IllegalArgumentException("target names must not be blank, got " + Arrays.toString(targets));
            }
            Predicate<Slot> matches = s -> TargetModules.nameMatches(s.name(), t)
                    || (s.byIndex() && String.valueOf(s.index()).equals(t));
            boolean any = false;
            for (Slot s : slots) {
                if (matches.test(s)) {
                    any = true;
                    if (out.stream().noneMatch(o -> o.index() == s.index())) {
                        out.add(s);
                    }
                }
            }
            if (!any) {
                throw new IllegalArgumentException("target '" + t + "' names no layer; expected one of " + slots);
            }
        }
        return out;
    }

    private static List<Slot> byRegex(List<Slot> slots, Pattern regex) {
        Objects.requireNonNull(regex, "regex must not be null");
        List<Slot> out = new ArrayList<>();
        for (Slot s : slots) {
            if (TargetModules.regexMatches(s.name(), regex)) {
                out.add(s);
            }
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException("target regex '" + regex.pattern() + "' matches no layer name; layers: "
                    + slots);
        }
        return out;
    }

    // ---------------------------------------------------------------- LoRA layers of a network

    private static org.deeplearning4j.nn.api.Layer[] layers(Model net) {
        Objects.requireNonNull(net, "net must not be null");
        if (net instanceof MultiLayerNetwork) {
            return ((MultiLayerNetwork) net).getLayers();
        }
        if (net instanceof ComputationGraph) {
            return ((ComputationGraph) net).getLayers();
        }
        throw new IllegalArgumentException("expected a MultiLayerNetwork or ComputationGraph, got "
                + net.getClass().getName());
    }

    /**
     * The LoRA layers with an adapter, by layer name, in network order; refuses two with one name (a network not made
     * by {@link #apply}, which refuses them), on which every call here would act on one of the two only.
     */
    private static Map<String, LoraLayer> adapted(Model net) {
        Map<String, LoraLayer> out = new LinkedHashMap<>();
        for (org.deeplearning4j.nn.api.Layer l : layers(net)) {
            if (l instanceof LoraLayer && ((LoraLayer) l).ops().hasAdapter()) {
                LoraLayer other = out.putIfAbsent(l.conf().getLayer().getLayerName(), (LoraLayer) l);
                if (other != null) {
                    throw new IllegalArgumentException("LoRA layers " + other.describe() + " and "
                            + ((LoraLayer) l).describe() + " share the name '" + l.conf().getLayer().getLayerName()
                            + "'; lora4j keys adapters by layer name, so it would act on one of them only. Expected "
                            + "a network whose adapted layers have distinct names (LoraDl4j.apply refuses others)");
                }
            }
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException("expected a network made by LoraDl4j.apply (with LoRA layers), got "
                    + "one without");
        }
        return out;
    }

    /**
     * Parameters the updater trains: {@code Σ r·(nIn + nOut)} over the LoRA layers with an adapter.
     *
     * @param net a network made by {@link #apply}
     * @return the number of trainable parameters
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     */
    public static long trainableParameterCount(Model net) {
        long n = 0;
        for (LoraLayer l : adapted(net).values()) {
            n += LoraParamInitializer.trainableParams((Layer) l.loraConf());
        }
        return n;
    }

    /**
     * All parameters of the network: frozen and trainable, as DL4J's {@code numParams()} counts them.
     *
     * @param net a network made by {@link #apply}
     * @return the length of the network's parameter vector
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     */
    public static long totalParameterCount(Model net) {
        adapted(net);
        return net.numParams();
    }

    /**
     * PEFT's {@code print_trainable_parameters} line for the network, the counts DL4J's {@code summary()} cannot give
     * (see {@link #summary}).
     *
     * @param net a network made by {@link #apply}
     * @return e.g. {@code "trainable params: 1,216 || all params: 8,808 || trainable%: 13.8056"}
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     */
    public static String trainableParametersReport(Model net) {
        long trainable = trainableParameterCount(net);
        long all = net.numParams();
        return String.format(Locale.ROOT, "trainable params: %,d || all params: %,d || trainable%%: %.4f", trainable,
                all, 100.0 * trainable / all);
    }

    /**
     * A per-layer table of what trains and what is frozen, and how, ending with
     * {@link #trainableParametersReport}'s line. Use it instead of DL4J's {@code summary()} on a LoRA network: DL4J
     * counts a layer's parameters as frozen only when the layer is TransferLearning's {@code FrozenLayer} (which
     * passes no gradient), so on a LoRA network it reports every parameter trainable and 0 frozen, although only
     * {@code loraA} and {@code loraB} train (frozen {@code W} and {@code b} inside a LoRA layer, and layers in
     * {@code FrozenLayerWithBackprop} or {@link FrozenBatchNormalization}, are invisible to it).
     *
     * @param net a network made by {@link #apply}
     * @return a multi-line table: layer name, DL4J layer class, parameters, trainable parameters, how it is frozen
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     */
    public static String summary(Model net) {
        adapted(net);
        List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"layer", "type", "params", "trainable", "frozen how"});
        long trainable = 0;
        for (org.deeplearning4j.nn.api.Layer l : layers(net)) {
            String name = l.conf().getLayer().getLayerName();
            long params = l.numParams();
            long train = 0;
            String how;
            if (l instanceof LoraLayer && ((LoraLayer) l).ops().hasAdapter()) {
                train = LoraParamInitializer.trainableParams((Layer) ((LoraLayer) l).loraConf());
                how = "LoRA r=" + ((LoraLayer) l).loraConf().lora().getRank() + ": loraA, loraB train; W, b frozen";
            } else if (l instanceof LoraLayer) {
                how = "frozen: LoRA layer without adapter";
            } else if (l instanceof FrozenBatchNormalizationImpl) {
                how = "frozen: statistics and scale, inference mode";
            } else if (l instanceof org.deeplearning4j.nn.layers.FrozenLayerWithBackprop) {
                how = "frozen: FrozenLayerWithBackprop("
                        + ((org.deeplearning4j.nn.layers.FrozenLayerWithBackprop) l).getInsideLayer().getClass()
                        .getSimpleName() + ")";
            } else if (l instanceof org.deeplearning4j.nn.layers.FrozenLayer) {
                how = "frozen: FrozenLayer(" + ((org.deeplearning4j.nn.layers.FrozenLayer) l).getInsideLayer()
                        .getClass().getSimpleName() + ")";
            } else if (params == 0) {
                how = "no parameters";
            } else {
                train = params;
                how = "trainable (not frozen by lora4j)";
            }
            trainable += train;
            rows.add(new String[] {name == null ? String.valueOf(l.getIndex()) : name, l.getClass().getSimpleName(),
                    String.format(Locale.ROOT, "%,d", params), String.format(Locale.ROOT, "%,d", train), how});
        }
        int[] width = new int[5];
        for (String[] r : rows) {
            for (int i = 0; i < r.length; i++) {
                width[i] = Math.max(width[i], r[i].length());
            }
        }
        StringBuilder out = new StringBuilder();
        for (String[] r : rows) {
            out.append(String.format(Locale.ROOT, "%-" + width[0] + "s  %-" + width[1] + "s  %" + width[2] + "s  %"
                    + width[3] + "s  %s%n", (Object[]) r));
        }
        long all = net.numParams();
        return out.append(String.format(Locale.ROOT, "trainable params: %,d || all params: %,d || trainable%%: %.4f%n",
                trainable, all, 100.0 * trainable / all)).toString();
    }

    /**
     * Whether the LoRA layers of {@code net} are merged (they are merged and unmerged together).
     *
     * @param net a network made by {@link #apply}
     * @return true while merged
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     */
    public static boolean isMerged(Model net) {
        return adapted(net).values().iterator().next().loraConf().merged();
    }

    // ---------------------------------------------------------------- merge

    /**
     * Merges every adapter into its {@code W} in place ({@code W += s·(B A)ᵀ}, lora-core's exact merge): the network
     * then computes at base cost, with the same outputs up to rounding. {@code fit()} is refused until
     * {@link #unmerge}. All or nothing.
     *
     * @param net a network made by {@link #apply}; its {@code W} views are modified
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     * @throws IllegalStateException    if already merged, or an adapter holds NaN or infinity ({@code W} unchanged)
     */
    public static void merge(Model net) {
        Map<String, LoraLayer> layers = adapted(net);
        requireMerged(layers, false);
        AllOrNothing.run(List.copyOf(layers.values()), l -> l.ops().merge(l.paramTable(), l.describe()),
                l -> l.ops().unmerge(l.paramTable(), l.describe()), LoraLayer::describe, "merging", "unmerging",
                "merged");
    }

    /**
     * Takes every adapter out of its {@code W} again: bit for bit what it was before {@link #merge} in this process
     * (for a network restored merged from a file, by subtraction, exact up to an ulp per element).
     *
     * @param net a merged network made by {@link #apply}; its {@code W} views are modified
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     * @throws IllegalStateException    if not merged
     */
    public static void unmerge(Model net) {
        Map<String, LoraLayer> layers = adapted(net);
        requireMerged(layers, true);
        for (LoraLayer l : layers.values()) {
            l.ops().unmerge(l.paramTable(), l.describe());
        }
    }

    private static void requireMerged(Map<String, LoraLayer> layers, boolean merged) {
        for (LoraLayer l : layers.values()) {
            if (l.loraConf().merged() != merged) {
                throw new IllegalStateException("layer " + l.describe() + (merged
                        ? " is not merged; nothing to unmerge" : " is already merged; unmerge(net) first"));
            }
        }
    }

    /**
     * A new network of DL4J's own layer classes in which each LoRA layer is its base {@code DenseLayer} /
     * {@code OutputLayer} with {@code W + s·(B A)ᵀ}: the same outputs (up to rounding) at base cost, for deployment.
     * {@code net} is not changed. Untargeted dense and output layers get their original configuration back; other
     * layers frozen by {@link #apply} stay in DL4J's {@code FrozenLayerWithBackprop} (with its NoOp updater).
     *
     * @param net a network made by {@link #apply}, merged or not
     * @return a new, initialised network without lora4j classes
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     */
    public static MultiLayerNetwork mergeAndUnload(MultiLayerNetwork net) {
        adapted(net);
        MultiLayerConfiguration c = net.getLayerWiseConfigurations().clone();
        for (int i = 0; i < c.getConfs().size(); i++) {
            unloadConf(c.getConf(i));
        }
        MultiLayerNetwork out = new MultiLayerNetwork(c);
        out.init();
        for (int i = 0; i < net.getnLayers(); i++) {
            unloadParams(net.getLayer(i), out.getLayer(i).paramTable());
        }
        return out;
    }

    /**
     * {@link #mergeAndUnload(MultiLayerNetwork)} for a graph.
     *
     * @param graph a graph made by {@link #apply}, merged or not
     * @return a new, initialised graph without lora4j classes
     * @throws IllegalArgumentException for a graph without LoRA layers
     */
    public static ComputationGraph mergeAndUnload(ComputationGraph graph) {
        adapted(graph);
        ComputationGraphConfiguration c = graph.getConfiguration().clone();
        for (GraphVertex v : c.getVertices().values()) {
            if (v instanceof LayerVertex) {
                unloadConf(((LayerVertex) v).getLayerConf());
            }
        }
        ComputationGraph out = new ComputationGraph(c);
        out.init();
        for (org.deeplearning4j.nn.api.Layer l : graph.getLayers()) {
            unloadParams(l, out.getLayer(l.conf().getLayer().getLayerName()).paramTable());
        }
        return out;
    }

    private static void unloadConf(NeuralNetConfiguration c) {
        if (c.getLayer() instanceof LoraLayerConf) {
            c.setLayer(((LoraLayerConf) c.getLayer()).base().clone());
        } else if (c.getLayer() instanceof FrozenBatchNormalization) {
            c.setLayer(((FrozenBatchNormalization) c.getLayer()).getBase().clone());
        }
    }

    private static void unloadParams(org.deeplearning4j.nn.api.Layer from, Map<String, INDArray> to) {
        Map<String, INDArray> params = from.paramTable();
        for (Map.Entry<String, INDArray> e : to.entrySet()) {
            INDArray v = from instanceof LoraLayer && e.getKey().equals(WEIGHT_KEY)
                    ? ((LoraLayer) from).ops().mergedWeight(params) : params.get(e.getKey());
            e.getValue().assign(v);
        }
    }

    // ---------------------------------------------------------------- PEFT files

    /**
     * Saves the adapters as PEFT files ({@code adapter_model.safetensors} and {@code adapter_config.json}) in
     * {@code dir}, in the network's precision: F64 for a DOUBLE network, F32 for a FLOAT one, so that
     * {@link #loadAdapter} gives back the same bits (PEFT and safetensors read both). Module paths are layer names
     * ({@code base_model.model.<layer name>.lora_A.weight} {@code [r, nIn]}, {@code ...lora_B.weight}
     * {@code [nOut, r]}), {@code fan_in_fan_out = true} (DL4J stores {@code W [nIn, nOut]}), and the config holds each
     * layer's rank, alpha, dropout and rsLoRA flag. Atomic, as {@link PeftAdapterFiles#save}.
     *
     * @param net a network made by {@link #apply}; not changed
     * @param dir the directory (created if absent)
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public static void saveAdapter(Model net, Path dir) throws IOException {
        saveAdapter(net, dir, null);
    }

    /**
     * {@link #saveAdapter(Model, Path)} in a chosen file type: {@code FLOAT} (F32, PEFT's usual; a DOUBLE network's
     * adapter then reloads rounded to float), {@code DOUBLE} (F64), {@code HALF} (F16) or {@code BFLOAT16} (BF16);
     * narrowing rounds to nearest even.
     *
     * @param net      a network made by {@link #apply}; not changed
     * @param dir      the directory (created if absent)
     * @param fileType the tensors' type in the file, or null for the network's own
     * @throws IllegalArgumentException for a network without LoRA layers, or with two of one name, or a file type
     *                                  other than those four
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public static void saveAdapter(Model net, Path dir, DataType fileType) throws IOException {
        List<AdapterTensors> modules = new ArrayList<>();
        DataType type = fileType;
        for (Map.Entry<String, LoraLayer> e : adapted(net).entrySet()) {
            Map<String, INDArray> p = e.getValue().paramTable();
            LoraConfig config = e.getValue().loraConf().loraConfig();
            // DL4J stores W [nIn, nOut]: PEFT's fan_in_fan_out; A [r, nIn] and B [nOut, r] are stored as for [out, in].
            modules.add(new AdapterTensors(e.getKey(), p.get(LORA_A_KEY), p.get(LORA_B_KEY),
                    config.useDora() ? p.get(MAGNITUDE_KEY) : null, config, WeightLayout.IN_OUT));
            type = type == null ? p.get(LORA_A_KEY).dataType() : type;
        }
        PeftAdapterFiles.saver().adapterTensors(LoraLinear.DEFAULT_ADAPTER, modules).fileType(type)
                .save(dir, LoraLinear.DEFAULT_ADAPTER);
    }

    /**
     * Replaces the adapters of {@code net} by the PEFT adapter in {@code dir}, with {@link PeftAdapterFiles#load}'s
     * checks and semantics: the file's modules must be exactly the network's LoRA layers (by name), each with the
     * layer's rank and shapes {@code A [r, nIn]}, {@code B [nOut, r]}; its values must be finite (in the network's
     * data type too); each layer takes the file's {@code lora_alpha} (or its {@code alpha_pattern} entry),
     * {@code lora_dropout} and {@code use_rslora}, which its configuration then keeps (saved with the network; the
     * dropout acts in the next {@code fit()}). Refused by name: a file with {@code modules_to_save} or trained biases
     * (whole layers, which lora-dl4j does not replace), LoRA for layers the network lacks or of another kind
     * (embedding, conv), and a DoRA file ({@code use_dora}) for a plain LoRA network or a LoRA file for a DoRA one
     * (a DoRA file's {@code lora_magnitude_vector} goes to {@code loraMagnitude}). All or nothing: everything is read and checked before any parameter or setting changes.
     *
     * @param net a network made by {@link #apply}; only its {@code loraA}/{@code loraB} and its LoRA layers' alpha,
     *            dropout and rsLoRA settings change
     * @param dir a directory holding {@value PeftAdapterFiles#MODEL_FILE} and {@value PeftAdapterFiles#CONFIG_FILE}
     * @return the file's configuration
     * @throws IllegalArgumentException if the file does not fit the network (message: module, expected, actual), or
     *                                  holds something lora-dl4j cannot honour (named)
     * @throws IllegalStateException    while merged
     * @throws io.github.lora4j.io.AdapterFormatException for a corrupt or unsupported file, or NaN or infinity in it
     * @throws IOException              if reading fails
     */
    public static PeftAdapterConfig loadAdapter(Model net, Path dir) throws IOException {
        Map<String, LoraLayer> layers = adapted(net);
        requireMerged(layers, false);
        // lora-core's loader does the reading and checking, into stand-in layers over the frozen W (referenced: adding
        // an adapter to them writes no W); the network changes only once every module has passed.
        Map<String, LoraLinear> modules = new LinkedHashMap<>();
        for (Map.Entry<String, LoraLayer> e : layers.entrySet()) {
            modules.put(e.getKey(), LoraLinear.base(e.getValue().paramTable().get(WEIGHT_KEY), null, WeightLayout.IN_OUT));
        }
        PeftAdapter file = PeftAdapterFiles.load(dir, modules, Map.of(), Map.of(), LoraLinear.DEFAULT_ADAPTER,
                layout -> checkFitsLayers(layout, layers, dir));
        for (Map.Entry<String, LoraLayer> e : layers.entrySet()) {
            LoraAdapter loaded = modules.get(e.getKey()).adapter(LoraLinear.DEFAULT_ADAPTER);
            Map<String, INDArray> p = e.getValue().paramTable();
            p.get(LORA_A_KEY).assign(loaded.a());
            p.get(LORA_B_KEY).assign(loaded.b());
            if (loaded.isDora()) {
                p.get(MAGNITUDE_KEY).assign(loaded.magnitude());
            }
            LoraSettings settings = e.getValue().loraConf().lora();
            settings.setAlpha(loaded.config().alpha());
            settings.setRsLora(loaded.config().rsLora());
            settings.setDropout(loaded.config().dropout());
            e.getValue().ops().settingsChanged();
        }
        return file.config();
    }

    /**
     * What {@link #loadAdapter} checks beyond lora-core's loader, on the file's header before any tensor is read: no
     * whole-layer tensors, every LoRA layer of the network covered, each with the layer's rank.
     */
    private static void checkFitsLayers(PeftAdapterLayout layout, Map<String, LoraLayer> layers, Path dir) {
        boolean dora = layers.values().iterator().next().loraConf().lora().isUseDora();
        if (layout.config().useDora() != dora) {
            throw new IllegalArgumentException("the adapter in " + dir + (layout.config().useDora()
                    ? " is DoRA (use_dora: true, with lora_magnitude_vector tensors) but the network's LoRA layers are "
                    + "plain LoRA: expected use_dora false; apply DoRA (LoraConfig.useDora(true)) to load it"
                    : " is plain LoRA (no use_dora) but the network's LoRA layers are DoRA: expected use_dora true with "
                    + "lora_magnitude_vector tensors; apply plain LoRA to load it") + "; nothing was loaded");
        }
        if (!layout.fullTensors().isEmpty() || !layout.config().modulesToSave().isEmpty()) {
            throw new IllegalArgumentException("the adapter in " + dir + " holds whole layers (modules_to_save "
                    + layout.config().modulesToSave() + ", full tensors for " + layout.fullTensors().keySet()
                    + "), which lora-dl4j cannot load: it replaces no layer of a network. Expected LoRA tensors only");
        }
        TreeSet<String> missing = new TreeSet<>(layers.keySet());
        missing.removeAll(layout.loraModules().keySet());
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("expected an adapter for the LoRA layers " + new TreeSet<>(layers.keySet())
                    + ", got one for " + layout.loraModules().keySet() + " (missing " + missing + ") in " + dir);
        }
        for (Map.Entry<String, LoraLayer> e : layers.entrySet()) {
            int rank = e.getValue().loraConf().lora().getRank();
            int fileRank = layout.loraModules().get(e.getKey()).rank();
            if (fileRank != rank) {
                throw new IllegalArgumentException("layer '" + e.getKey() + "': expected r " + rank + " (the layer's "
                        + "loraA/loraB shapes), got r " + fileRank + " in " + dir);
            }
        }
    }
}
