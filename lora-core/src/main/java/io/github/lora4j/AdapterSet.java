package io.github.lora4j;

import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.SplittableRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The layer's adapters by name, in the order they were added, with the active one and the enabled switch: the one
 * definition of the adapter that forward uses ({@link #effective()}). Not thread-safe: the layer's lock guards it.
 */
final class AdapterSet {

    private final Map<String, LoraAdapter> adapters = new LinkedHashMap<>();
    private String active;
    private boolean enabled = true;

    /** The adapter called {@code name}. */
    LoraAdapter require(String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        LoraAdapter a = adapters.get(name);
        if (a == null) {
            throw new IllegalArgumentException("unknown adapter '" + name + "'; known adapters: " + adapters.keySet());
        }
        return a;
    }

    /** The adapter called {@code name}, or null. */
    LoraAdapter get(String name) {
        return adapters.get(name);
    }

    void put(String name, LoraConfig config, INDArray a, INDArray b) {
        if (adapters.containsKey(name)) {
            throw new IllegalArgumentException("adapter '" + name + "' already exists; known adapters: "
                    + adapters.keySet());
        }
        adapters.put(name, new LoraAdapter(name, config, a, b));
    }

    /** Copies {@code a}, {@code b} (checked: shape, type, finite) into {@code adapter}'s live parameters. */
    void setWeights(LoraAdapter adapter, INDArray a, INDArray b, DataType type) {
        Checks.checkArray("A of adapter '" + adapter.name() + "'", a, adapter.a().shape(), type);
        Checks.checkArray("B of adapter '" + adapter.name() + "'", b, adapter.b().shape(), type);
        adapter.a().assign(a);
        adapter.b().assign(b);
    }

    void remove(String name) {
        adapters.remove(name);
        if (name.equals(active)) {
            active = null;
        }
    }

    Collection<LoraAdapter> all() {
        return adapters.values();
    }

    List<String> names() {
        return new ArrayList<>(adapters.keySet());
    }

    String active() {
        return active;
    }

    void activate(String name) {
        active = name;
    }

    boolean enabled() {
        return enabled;
    }

    void enable(boolean on) {
        enabled = on;
    }

    /** The adapter the unmerged forward adds: the active one while adapters are enabled, else null. */
    LoraAdapter effective() {
        return enabled && active != null ? adapters.get(active) : null;
    }

    /** Fresh {@code A [r, in]} and {@code B [out, r] = 0} per {@code config.init()}, deterministic from its seed. */
    static INDArray[] initialWeights(LoraConfig config, long in, long out, DataType type) {
        int r = config.rank();
        double[] a = new double[Math.toIntExact(r * in)];
        SplittableRandom rng = new SplittableRandom(config.seed());
        switch (config.init()) {
            case KAIMING_UNIFORM:
                // PEFT: kaiming_uniform_(A, a=sqrt(5)) gives bound = sqrt(6 / ((1 + 5) · in)) = 1 / sqrt(in).
                double bound = 1.0 / Math.sqrt(in);
                for (int i = 0; i < a.length; i++) {
                    a[i] = rng.nextDouble(-bound, bound);
                }
                break;
            case GAUSSIAN:
                for (int i = 0; i < a.length; i++) {
                    a[i] = rng.nextGaussian() / r;
                }
                break;
            case ZERO:
                break;
            default:
                throw new AssertionError(config.init());
        }
        INDArray aArr = Nd4j.createFromArray(a).castTo(type).reshape('c', r, in);
        INDArray bArr = Nd4j.zeros(type, out, r);
        return new INDArray[] {aArr, bArr};
    }
}
