package io.github.lora4j.dl4j;

import io.github.lora4j.InitialAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.model.LoraModel;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.weights.IWeightInit;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Parameters of a LoRA layer, in this order in the network's flat parameter vector:
 * <ul>
 *   <li>{@value #WEIGHT_KEY} {@code [nIn, nOut]}, f-order (as DL4J's {@code DefaultParamInitializer}), frozen;</li>
 *   <li>{@value #BIAS_KEY} {@code [nOut]} (if the layer has a bias), frozen;</li>
 *   <li>{@value #LORA_A_KEY} {@code [r, nIn]} and {@value #LORA_B_KEY} {@code [nOut, r]}, c-order (PEFT's
 *       {@code lora_A}/{@code lora_B}), trainable; absent in a layer without adapter;</li>
 *   <li>{@value #MAGNITUDE_KEY} {@code [nOut]} for a DoRA adapter ({@link LoraSettings#isUseDora()}; PEFT's
 *       {@code lora_magnitude_vector}), trainable.</li>
 * </ul>
 * The keys hold no {@code '_'}: DL4J's updater splits gradient keys at the first one (a key like {@code lora_A}
 * crashes {@code fit()}). Initialised parameters: {@code W} by the layer's weight init, {@code b} by its bias init,
 * {@code loraA}/{@code loraB} as lora-core's {@link LoraModel} does ({@link LoraConfig#forModule} of the layer name, {@code B = 0}; for DoRA, {@code loraMagnitude} the column norms of {@code W}, PEFT's initial
 * magnitude).
 */
public final class LoraParamInitializer implements ParamInitializer {

    /** Frozen weight {@code [nIn, nOut]}. */
    public static final String WEIGHT_KEY = "W";
    /** Frozen bias {@code [nOut]}. */
    public static final String BIAS_KEY = "b";
    /** Trainable {@code A [r, nIn]}. */
    public static final String LORA_A_KEY = "loraA";
    /** Trainable {@code B [nOut, r]}. */
    public static final String LORA_B_KEY = "loraB";

    /** Trainable DoRA magnitude {@code m [nOut]} (PEFT's {@code lora_magnitude_vector}); DoRA layers only. */
    public static final String MAGNITUDE_KEY = "loraMagnitude";

    private static final LoraParamInitializer INSTANCE = new LoraParamInitializer();

    private LoraParamInitializer() {
    }

    /**
     * The shared instance.
     *
     * @return the one, stateless initializer
     */
    public static LoraParamInitializer getInstance() {
        return INSTANCE;
    }

    /**
     * Whether {@code key} is a frozen parameter.
     *
     * @param key a parameter key of a LoRA layer
     * @return true for {@link #WEIGHT_KEY} and {@link #BIAS_KEY}, false otherwise (the adapter's, or any other key)
     */
    public static boolean isFrozen(String key) {
        return WEIGHT_KEY.equals(key) || BIAS_KEY.equals(key);
    }

    /** Trainable parameters of the layer: {@code r·(nIn + nOut)} ({@code + nOut} for DoRA), 0 without adapter. */
    static long trainableParams(Layer layer) {
        LoraLayerConf c = (LoraLayerConf) layer;
        return c.lora() == null ? 0 : (long) c.lora().getRank() * (c.nIn() + c.nOut()) + (isDora(c) ? c.nOut() : 0);
    }

    /** Whether the layer has a DoRA adapter, hence {@link #MAGNITUDE_KEY}. */
    static boolean isDora(LoraLayerConf c) {
        return c.lora() != null && c.lora().isUseDora();
    }

    @Override
    public long numParams(NeuralNetConfiguration conf) {
        return numParams(conf.getLayer());
    }

    @Override
    public long numParams(Layer layer) {
        LoraLayerConf c = (LoraLayerConf) layer;
        return c.nIn() * c.nOut() + (c.hasBias() ? c.nOut() : 0) + trainableParams(layer);
    }

    @Override
    public List<String> paramKeys(Layer layer) {
        List<String> keys = new ArrayList<>(4);
        keys.add(WEIGHT_KEY);
        keys.addAll(biasKeys(layer));
        if (((LoraLayerConf) layer).lora() != null) {
            keys.add(LORA_A_KEY);
            keys.add(LORA_B_KEY);
        }
        if (isDora((LoraLayerConf) layer)) {
            keys.add(MAGNITUDE_KEY);
        }
        return keys;
    }

    @Override
    public List<String> weightKeys(Layer layer) {
        LoraLayerConf c = (LoraLayerConf) layer;
        return c.lora() == null ? List.of(WEIGHT_KEY) : isDora(c)
                ? List.of(WEIGHT_KEY, LORA_A_KEY, LORA_B_KEY, MAGNITUDE_KEY) : List.of(WEIGHT_KEY, LORA_A_KEY, LORA_B_KEY);
    }

    @Override
    public List<String> biasKeys(Layer layer) {
        return ((LoraLayerConf) layer).hasBias() ? List.of(BIAS_KEY) : Collections.emptyList();
    }

    @Override
    public boolean isWeightParam(Layer layer, String key) {
        return weightKeys(layer).contains(key);
    }

    @Override
    public boolean isBiasParam(Layer layer, String key) {
        return BIAS_KEY.equals(key);
    }

    @Override
    public Map<String, INDArray> init(NeuralNetConfiguration conf, INDArray paramsView, boolean initializeParams) {
        Layer layer = conf.getLayer();
        long expected = numParams(layer);
        if (paramsView.length() != expected) {
            throw new IllegalStateException("expected a parameter view of length " + expected + " for layer '"
                    + layer.getLayerName() + "', got " + paramsView.length());
        }
        conf.clearVariables();
        Map<String, INDArray> params = views(layer, paramsView);
        for (String key : params.keySet()) {
            conf.addVariable(key);
        }
        if (initializeParams) {
            initialize((FeedForwardLayer) layer, params);
        }
        return Collections.synchronizedMap(params);
    }

    @Override
    public Map<String, INDArray> getGradientsFromFlattened(NeuralNetConfiguration conf, INDArray gradientView) {
        return views(conf.getLayer(), gradientView);
    }

    /** Views of {@code flat} in the order of {@link #paramKeys}. */
    private Map<String, INDArray> views(Layer layer, INDArray flat) {
        LoraLayerConf c = (LoraLayerConf) layer;
        long in = c.nIn();
        long out = c.nOut();
        INDArray v = flat.reshape(flat.length());
        Map<String, INDArray> m = new LinkedHashMap<>();
        long off = 0;
        m.put(WEIGHT_KEY, v.get(NDArrayIndex.interval(off, off + in * out)).reshape('f', in, out));
        off += in * out;
        if (c.hasBias()) {
            m.put(BIAS_KEY, v.get(NDArrayIndex.interval(off, off + out)));
            off += out;
        }
        if (c.lora() != null) {
            long r = c.lora().getRank();
            m.put(LORA_A_KEY, v.get(NDArrayIndex.interval(off, off + r * in)).reshape('c', r, in));
            off += r * in;
            m.put(LORA_B_KEY, v.get(NDArrayIndex.interval(off, off + out * r)).reshape('c', out, r));
            off += out * r;
        }
        if (isDora(c)) {
            m.put(MAGNITUDE_KEY, v.get(NDArrayIndex.interval(off, off + out)));
        }
        return m;
    }

    private static void initialize(FeedForwardLayer layer, Map<String, INDArray> params) {
        INDArray w = params.get(WEIGHT_KEY);
        long in = layer.getNIn();
        long out = layer.getNOut();
        layer.getWeightInitFn().init(in, out, new long[] {in, out}, IWeightInit.DEFAULT_WEIGHT_INIT_ORDER, w);
        if (params.containsKey(BIAS_KEY)) {
            params.get(BIAS_KEY).assign(layer.getBiasInit());
        }
        LoraLayerConf c = (LoraLayerConf) layer;
        if (c.lora() != null) {
            INDArray[] ab;
            try {
                ab = initialAdapter(layer.getLayerName(), w, c.loraConfig());
            } catch (IllegalArgumentException e) {
                // DoRA over a W with a zero column (e.g. WeightInit.ZERO, before LoraDl4j.apply copies the real W and
                // sets m for it): A and B as for LoRA, m = 0; a forward over such a W refuses its zero norm by name
                ab = initialAdapter(layer.getLayerName(), w, c.loraConfig().toBuilder().useDora(false).build());
                params.get(MAGNITUDE_KEY).assign(0);
            }
            params.get(LORA_A_KEY).assign(ab[0]);
            params.get(LORA_B_KEY).assign(ab[1]);
            if (ab.length > 2) {
                params.get(MAGNITUDE_KEY).assign(ab[2]);
            }
        }
    }

    /**
     * The module path a layer's adapter is drawn for ({@link LoraConfig#forModule}): its name, or {@code "layer"} for
     * a layer without one.
     */
    static String modulePath(String layerName) {
        return layerName == null || layerName.isBlank() ? "layer" : layerName;
    }

    /**
     * lora-core's initial {@code {A, B}} ({@code {A, B, m}} for DoRA) for a module named {@code name} with
     * {@code W [in, out]}: those of {@link LoraConfig#forModule config.forModule(name)}
     * ({@link LoraConfig#initialWeights}; for DoRA {@link InitialAdapter#of}, whose magnitude needs {@code W}), which is what
     * {@link LoraModel#applyLora} gives that module, so a layer here starts where lora-core's would.
     */
    @SuppressWarnings("try") // the scope is the point: the adapter arrays must outlive any open workspace
    static INDArray[] initialAdapter(String name, INDArray w, LoraConfig config) {
        String path = modulePath(name);
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            if (!config.useDora()) {
                return config.forModule(path).initialWeights(w.size(0), w.size(1), w.dataType());
            }
            InitialAdapter init = InitialAdapter.of(w, null, WeightLayout.IN_OUT, config.forModule(path));
            return new INDArray[] {init.a(), init.b(), init.magnitude()};
        }
    }
}
