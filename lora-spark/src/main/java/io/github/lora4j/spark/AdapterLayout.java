package io.github.lora4j.spark;

import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_A_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_B_KEY;

import io.github.lora4j.dl4j.LoraLayerConf;
import io.github.lora4j.dl4j.LoraParamInitializer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.gradient.DefaultGradient;
import org.deeplearning4j.nn.gradient.Gradient;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The trainable parameters of a LoRA network, {@code loraA [r, nIn]} and {@code loraB [nOut, r]} of every layer with
 * an adapter, in network order (layer by layer, A then B), as one flat vector of {@code Σ r·(nIn + nOut)} elements:
 * what the driver broadcasts and what the workers' gradients sum into. Driver and workers build the layout from the
 * same configuration, so the order is the same on both sides.
 *
 * <p>Holds live views into the network's flat parameter and gradient vectors; reading copies out, writing assigns
 * into the A/B views only ({@code W} and {@code b} are never touched).
 */
final class AdapterLayout {

    /** One adapted layer: DL4J's gradient key prefix, and views of its A and B and of their gradients. */
    private record Slot(String keyPrefix, String name, INDArray a, INDArray b, INDArray gradA, INDArray gradB) {
    }

    private final List<Slot> slots;
    private final DataType type;
    private final int length;

    private AdapterLayout(List<Slot> slots, DataType type) {
        this.slots = slots;
        this.type = type;
        long n = 0;
        for (Slot s : slots) {
            n += s.a().length() + s.b().length();
        }
        this.length = Math.toIntExact(n);
    }

    /**
     * The layout of {@code net}'s adapters; initialises the network's gradient view if it has none yet (no
     * parameter changes).
     *
     * @param net a network with at least one LoRA layer with an adapter
     * @return the layout, holding views into {@code net}
     */
    static AdapterLayout of(NetworkAccess net) {
        net.initGradientsView();
        List<Slot> slots = new ArrayList<>();
        Layer[] layers = net.layers();
        for (int i = 0; i < layers.length; i++) {
            Layer l = layers[i];
            if (!(l.conf().getLayer() instanceof LoraLayerConf conf) || conf.lora() == null) {
                continue;
            }
            Map<String, INDArray> grads = LoraParamInitializer.getInstance()
                    .getGradientsFromFlattened(l.conf(), l.getGradientsViewArray());
            slots.add(new Slot(net.gradientKeyPrefix(i, l), l.conf().getLayer().getLayerName(),
                    l.getParam(LORA_A_KEY), l.getParam(LORA_B_KEY), grads.get(LORA_A_KEY), grads.get(LORA_B_KEY)));
        }
        if (slots.isEmpty()) {
            throw new IllegalArgumentException("expected a network made by LoraDl4j.apply (with LoRA layers), got one "
                    + "without");
        }
        return new AdapterLayout(List.copyOf(slots), net.dataType());
    }

    /** Number of trainable parameters, {@code Σ r·(nIn + nOut)}. */
    int length() {
        return length;
    }

    DataType dataType() {
        return type;
    }

    /** Bytes of A and B together: {@code Σ r·(nIn + nOut) × element size}. */
    long bytes() {
        return (long) length * FlatVector.elementBytes(type);
    }

    /** The A and B views (or their gradients' views), in layout order: layer by layer, A then B. */
    private List<INDArray> views(boolean gradients) {
        List<INDArray> out = new ArrayList<>(2 * slots.size());
        for (Slot s : slots) {
            out.add(gradients ? s.gradA() : s.a());
            out.add(gradients ? s.gradB() : s.b());
        }
        return out;
    }

    private FlatVector read(boolean gradients) {
        FlatVector out = FlatVector.zeros(type, length);
        int off = 0;
        for (INDArray v : views(gradients)) {
            out.copyFrom(v, off);
            off += (int) v.length();
        }
        return out;
    }

    private void write(boolean gradients, FlatVector values) {
        int off = 0;
        for (INDArray v : views(gradients)) {
            values.copyTo(v, off);
            off += (int) v.length();
        }
    }

    /** A copy of every A and B. */
    FlatVector readParams() {
        return read(false);
    }

    /** Assigns every A and B from {@code values} (as {@link #readParams} lays them out). */
    void writeParams(FlatVector values) {
        write(false, values);
    }

    /** A copy of the gradients of every A and B, as the last backward pass left them. */
    FlatVector readGradients() {
        return read(true);
    }

    /**
     * Writes {@code values} into the A/B gradient views and returns the {@link Gradient} DL4J's backward pass would
     * have built for them: the network's flat gradient vector, with one entry per adapted parameter under DL4J's key
     * ({@code "<layer index or name>_loraA"}), which the updater uses for per-layer gradient normalisation.
     *
     * @param values    gradients, laid out as {@link #readParams}
     * @param flattened the network's flat gradient vector (the updater's own view of it)
     * @return the gradient to hand to the updater
     */
    Gradient writeGradients(FlatVector values, INDArray flattened) {
        write(true, values);
        Gradient g = new DefaultGradient(flattened);
        for (Slot s : slots) {
            g.setGradientFor(s.keyPrefix() + "_" + LORA_A_KEY, s.gradA());
            g.setGradientFor(s.keyPrefix() + "_" + LORA_B_KEY, s.gradB());
        }
        return g;
    }

    /** The adapted layers' names, in layout order, for messages. */
    List<String> layerNames() {
        return slots.stream().map(Slot::name).toList();
    }
}
