package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_A_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_B_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.WEIGHT_KEY;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeSet;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.graph.GraphVertex;
import org.deeplearning4j.nn.conf.graph.LayerVertex;
import org.deeplearning4j.nn.conf.layers.BaseLayer;
import org.deeplearning4j.nn.conf.layers.BaseOutputLayer;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayerWithBackprop;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.NoOp;

/**
 * LoRA for DL4J networks: turns the {@code DenseLayer}s and {@code OutputLayer}s of a {@link MultiLayerNetwork} or
 * {@link ComputationGraph} into LoRA layers that the network's own {@code fit()} trains.
 *
 * <pre>{@code
 * MultiLayerNetwork lora = LoraDl4j.apply(net, LoraConfig.builder().rank(4).alpha(8).build(), "layer0", "layer1");
 * lora.fit(trainIterator);                       // trains loraA and loraB only; W and b stay bitwise unchanged
 * LoraDl4j.saveAdapter(lora, dir);               // PEFT files, module paths = layer names
 * MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(lora);   // DL4J's own layers, W + s·(B A)ᵀ
 * }</pre>
 *
 * <h2>What apply builds</h2>
 * A new network (the given one is not changed, parameters and updater state included) in which
 * <ul>
 *   <li>each targeted layer is a {@link LoraDenseLayer} / {@link LoraOutputLayer} with the same activation, loss,
 *       input dropout and updater, frozen {@code W [nIn, nOut]} and {@code b [nOut]}, and trainable
 *       {@code loraA [r, nIn]} and {@code loraB [nOut, r]} ({@code loraB = 0}, so its output equals the given
 *       network's bit for bit);</li>
 *   <li>every other layer with parameters is frozen: dense and output layers become LoRA layers without adapter
 *       (their backward computes {@code dL/dx} only), other layers are wrapped in DL4J's
 *       {@link FrozenLayerWithBackprop} with a NoOp updater;</li>
 *   <li>the updater therefore holds state for {@code loraA} and {@code loraB} alone:
 *       {@code updater.stateSize(Σ r·(nIn + nOut))} elements.</li>
 * </ul>
 * Listeners are not copied; iteration and epoch counts start at 0.
 *
 * <h2>Targets</h2>
 * Layer names (a name matches a layer whose name equals it or ends with {@code "." + name}, PEFT's rule), layer
 * indices of a {@link MultiLayerNetwork} ({@code "0"}), or a {@link Pattern} that must match the whole name. Every
 * name must match a layer, and every matched layer must be a {@code DenseLayer} or {@code OutputLayer}.
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
     * @param config  the adapter configuration (dropout must be 0: the layer's own dropout acts on its input)
     * @param targets at least one layer name or index
     * @return a new, initialised network
     * @throws IllegalArgumentException for a target naming no layer, a targeted layer without a linear weight, an
     *                                  unsupported data type, or a rank above {@code min(nIn, nOut)}
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
     * @param config the adapter configuration (dropout 0)
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
     * @param config  the adapter configuration (dropout 0)
     * @param targets at least one vertex name
     * @return a new, initialised graph
     * @throws IllegalArgumentException for a target naming no layer vertex, a targeted layer without a linear weight,
     *                                  an unsupported data type, or a rank above {@code min(nIn, nOut)}
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
     * @param config the adapter configuration (dropout 0)
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
        checkNetwork(net.getLayers() != null, conf.getDataType(), slots(net));
        Map<Integer, Layer> replaced = plan(slots(net), targeted, config);
        MultiLayerConfiguration c = conf.clone();
        c.setIterationCount(0);
        c.setEpochCount(0);
        replaced.forEach((i, layer) -> c.getConf(i).setLayer(layer));
        MultiLayerNetwork out = new MultiLayerNetwork(c);
        out.init();
        for (int i = 0; i < net.getnLayers(); i++) {
            copyParams(net.getLayer(i).paramTable(), out.getLayer(i).paramTable());
        }
        return out;
    }

    private static ComputationGraph apply(ComputationGraph graph, LoraConfig config, List<Slot> targeted) {
        ComputationGraphConfiguration conf = graph.getConfiguration();
        checkNetwork(graph.getLayers() != null, conf.getDataType(), slots(graph));
        List<Slot> slots = slots(graph);
        Map<Integer, Layer> replaced = plan(slots, targeted, config);
        ComputationGraphConfiguration c = conf.clone();
        c.setIterationCount(0);
        c.setEpochCount(0);
        replaced.forEach((i, layer) -> layerConf(c, slots.get(i).name()).setLayer(layer));
        ComputationGraph out = new ComputationGraph(c);
        out.init();
        for (Slot s : slots) {
            copyParams(graph.getLayer(s.name()).paramTable(), out.getLayer(s.name()).paramTable());
        }
        return out;
    }

    /** The new configuration of every layer that changes, by slot index; validates everything first. */
    private static Map<Integer, Layer> plan(List<Slot> slots, List<Slot> targeted, LoraConfig config) {
        Objects.requireNonNull(config, "config must not be null");
        LoraSettings settings = LoraSettings.of(config);
        for (Slot s : targeted) {
            requireLinear(s);
            FeedForwardLayer ff = (FeedForwardLayer) s.layer();
            long max = Math.min(ff.getNIn(), ff.getNOut());
            if (config.rank() > max) {
                throw new IllegalArgumentException("rank must be <= min(nIn, nOut) = " + max + " for layer "
                        + s + " (nIn " + ff.getNIn() + ", nOut " + ff.getNOut() + "), got " + config.rank());
            }
        }
        java.util.Set<Integer> targetIndices = new java.util.HashSet<>();
        targeted.forEach(s -> targetIndices.add(s.index()));
        Map<Integer, Layer> out = new LinkedHashMap<>();
        for (Slot s : slots) {
            boolean target = targetIndices.contains(s.index());
            if (target || (isLinear(s.layer()) && linearProblem(s.layer()) == null)) {
                out.put(s.index(), loraLayer(s.layer(), target ? settings : null));
            } else if (s.layer().initializer().numParams(s.layer()) > 0) {
                out.put(s.index(), frozen(s));
            }
        }
        return out;
    }

    private static Layer loraLayer(Layer base, LoraSettings settings) {
        return base instanceof OutputLayer ? new LoraOutputLayer((OutputLayer) base, settings)
                : new LoraDenseLayer((DenseLayer) base, settings);
    }

    /** An untargeted layer with parameters: DL4J's FrozenLayerWithBackprop, its updater NoOp (no state). */
    private static Layer frozen(Slot s) {
        if (s.layer() instanceof FrozenLayerWithBackprop) {
            return s.layer();
        }
        if (s.layer() instanceof BaseOutputLayer || !(s.layer() instanceof BaseLayer)) {
            throw new IllegalArgumentException("cannot freeze untargeted layer " + s + " ("
                    + s.layer().getClass().getSimpleName() + "): expected a DenseLayer or OutputLayer, or a "
                    + "non-output layer DL4J's FrozenLayerWithBackprop can wrap; target it or remove it");
        }
        if (s.layer() instanceof BatchNormalization) {
            // FrozenLayerWithBackprop runs it in inference mode, but its backprop needs training-mode statistics.
            throw new IllegalArgumentException("cannot freeze untargeted layer " + s + " (BatchNormalization): DL4J's "
                    + "FrozenLayerWithBackprop cannot backpropagate through it; expected layers without it");
        }
        BaseLayer inner = (BaseLayer) s.layer().clone();
        inner.setIUpdater(new NoOp());
        inner.setBiasUpdater(new NoOp());
        return new FrozenLayerWithBackprop(inner);
    }

    private static boolean isLinear(Layer layer) {
        return layer.getClass() == DenseLayer.class || layer.getClass() == OutputLayer.class;
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
                    + ": expected a DenseLayer or OutputLayer (a layer with a linear weight W [nIn, nOut])");
        }
        String problem = linearProblem(s.layer());
        if (problem != null) {
            throw new IllegalArgumentException("layer " + s + " has " + problem
                    + ": expected a plain DenseLayer or OutputLayer, which a LoRA layer with frozen W reproduces");
        }
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
     * its configuration, and whether it may be targeted by index.
     */
    private record Slot(int index, String name, Layer layer, boolean byIndex) {
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
            out.add(new Slot(i, l.getLayerName() == null ? String.valueOf(i) : l.getLayerName(), l, true));
        }
        return out;
    }

    private static List<Slot> slots(ComputationGraph graph) {
        List<Slot> out = new ArrayList<>();
        for (Map.Entry<String, GraphVertex> e : graph.getConfiguration().getVertices().entrySet()) {
            if (e.getValue() instanceof LayerVertex) {
                out.add(new Slot(out.size(), e.getKey(), ((LayerVertex) e.getValue()).getLayerConf().getLayer(),
                        false));
            }
        }
        return out;
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
            Predicate<Slot> matches = s -> s.name().equals(t) || s.name().endsWith("." + t)
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
            if (regex.matcher(s.name()).matches()) {
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

    /** The LoRA layers with an adapter, by layer name, in network order. */
    private static Map<String, LoraLayer> adapted(Model net) {
        Map<String, LoraLayer> out = new LinkedHashMap<>();
        for (org.deeplearning4j.nn.api.Layer l : layers(net)) {
            if (l instanceof LoraLayer && ((LoraLayer) l).ops().hasAdapter()) {
                out.put(l.conf().getLayer().getLayerName(), (LoraLayer) l);
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
     * @throws IllegalArgumentException for a network without LoRA layers
     */
    public static long trainableParameterCount(Model net) {
        long n = 0;
        for (LoraLayer l : adapted(net).values()) {
            n += LoraParamInitializer.trainableParams((Layer) l.loraConf());
        }
        return n;
    }

    /**
     * Whether the LoRA layers of {@code net} are merged (they are merged and unmerged together).
     *
     * @param net a network made by {@link #apply}
     * @return true while merged
     * @throws IllegalArgumentException for a network without LoRA layers
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
     * @throws IllegalArgumentException for a network without LoRA layers
     * @throws IllegalStateException    if already merged, or an adapter holds NaN or infinity ({@code W} unchanged)
     */
    public static void merge(Model net) {
        Map<String, LoraLayer> layers = adapted(net);
        requireMerged(layers, false);
        List<LoraLayer> done = new ArrayList<>();
        try {
            for (LoraLayer l : layers.values()) {
                l.ops().merge(l.paramTable(), l.describe());
                done.add(l);
            }
        } catch (RuntimeException e) {
            for (LoraLayer l : done) {
                l.ops().unmerge(l.paramTable(), l.describe());
            }
            throw e;
        }
    }

    /**
     * Takes every adapter out of its {@code W} again: bit for bit what it was before {@link #merge} in this process
     * (for a network restored merged from a file, by subtraction, exact up to an ulp per element).
     *
     * @param net a merged network made by {@link #apply}; its {@code W} views are modified
     * @throws IllegalArgumentException for a network without LoRA layers
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
     * @throws IllegalArgumentException for a network without LoRA layers
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
     * Saves the adapters as PEFT files ({@code adapter_model.safetensors}, F32, and {@code adapter_config.json}) in
     * {@code dir}, with module paths = layer names ({@code base_model.model.<layer name>.lora_A.weight}
     * {@code [r, nIn]}, {@code ...lora_B.weight} {@code [nOut, r]}) and {@code fan_in_fan_out = true} (DL4J stores
     * {@code W [nIn, nOut]}). Atomic, as {@link PeftAdapterFiles#save}.
     *
     * @param net a network made by {@link #apply}; not changed
     * @param dir the directory (created if absent)
     * @throws IllegalArgumentException for a network without LoRA layers
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public static void saveAdapter(Model net, Path dir) throws IOException {
        Map<String, LoraLinear> modules = new LinkedHashMap<>();
        for (Map.Entry<String, LoraLayer> e : adapted(net).entrySet()) {
            Map<String, INDArray> p = e.getValue().paramTable();
            LoraLinear linear = LoraLinear.base(p.get(WEIGHT_KEY), null, WeightLayout.IN_OUT);
            linear.addAdapter(LoraLinear.DEFAULT_ADAPTER, e.getValue().loraConf().loraConfig());
            linear.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, p.get(LORA_A_KEY), p.get(LORA_B_KEY));
            modules.put(e.getKey(), linear);
        }
        PeftAdapterFiles.save(dir, modules, LoraLinear.DEFAULT_ADAPTER);
    }

    /**
     * Replaces the adapters of {@code net} by the PEFT adapter in {@code dir}, whose modules must be exactly the
     * network's LoRA layers (by name), with their rank, alpha and rsLoRA and shapes {@code A [r, nIn]},
     * {@code B [nOut, r]}. All or nothing: everything is checked before any parameter changes.
     *
     * @param net a network made by {@link #apply}; only its {@code loraA}/{@code loraB} change
     * @param dir a directory holding {@value PeftAdapterFiles#MODEL_FILE} and {@value PeftAdapterFiles#CONFIG_FILE}
     * @return the file's configuration
     * @throws IllegalArgumentException if the file does not fit the network (message: module, expected, actual)
     * @throws IllegalStateException    while merged
     * @throws io.github.lora4j.io.AdapterFormatException for a corrupt or unsupported file
     * @throws IOException              if reading fails
     */
    public static PeftAdapterConfig loadAdapter(Model net, Path dir) throws IOException {
        Map<String, LoraLayer> layers = adapted(net);
        requireMerged(layers, false);
        PeftAdapter file = PeftAdapterFiles.read(dir);
        PeftAdapterConfig fc = file.config();
        if (!new TreeSet<>(file.modules()).equals(new TreeSet<>(layers.keySet()))) {
            throw new IllegalArgumentException("expected an adapter for the LoRA layers " + new TreeSet<>(layers.keySet())
                    + ", got one for " + file.modules());
        }
        Map<String, INDArray[]> prepared = new LinkedHashMap<>();
        for (Map.Entry<String, LoraLayer> e : layers.entrySet()) {
            LoraConfig lc = e.getValue().loraConf().loraConfig();
            if (fc.r() != lc.rank() || Double.compare(fc.loraAlpha(), lc.alpha()) != 0 || fc.useRslora() != lc.rsLora()) {
                throw new IllegalArgumentException("layer '" + e.getKey() + "': expected r " + lc.rank() + ", alpha "
                        + lc.alpha() + ", rsLoRA " + lc.rsLora() + " (the layer's), got r " + fc.r() + ", alpha "
                        + fc.loraAlpha() + ", rsLoRA " + fc.useRslora() + " in " + dir);
            }
            Map<String, INDArray> p = e.getValue().paramTable();
            INDArray a = file.a(e.getKey());
            INDArray b = file.b(e.getKey());
            checkShape(e.getKey() + " lora_A", p.get(LORA_A_KEY), a);
            checkShape(e.getKey() + " lora_B", p.get(LORA_B_KEY), b);
            DataType t = p.get(LORA_A_KEY).dataType();
            prepared.put(e.getKey(), new INDArray[] {a.castTo(t), b.castTo(t)});
        }
        for (Map.Entry<String, INDArray[]> e : prepared.entrySet()) {
            Map<String, INDArray> p = layers.get(e.getKey()).paramTable();
            p.get(LORA_A_KEY).assign(e.getValue()[0]);
            p.get(LORA_B_KEY).assign(e.getValue()[1]);
        }
        return fc;
    }

    private static void checkShape(String what, INDArray expected, INDArray actual) {
        if (!Arrays.equals(expected.shape(), actual.shape())) {
            throw new IllegalArgumentException(what + ": expected shape " + Arrays.toString(expected.shape())
                    + ", got " + Arrays.toString(actual.shape()));
        }
    }
}
