package io.github.lora4j;

import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.SplittableRandom;
import java.util.function.Consumer;
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
        put(name, config, a, b, null);
    }

    /** Adds adapter {@code name}; {@code dora} is its DoRA part, or null for plain LoRA. */
    void put(String name, LoraConfig config, INDArray a, INDArray b, Dora dora) {
        if (adapters.containsKey(name)) {
            throw new IllegalArgumentException("adapter '" + name + "' already exists; known adapters: "
                    + adapters.keySet());
        }
        adapters.put(name, new LoraAdapter(name, config, a, b, dora));
    }

    // The layer's registry changes, each with its refusal by the merge state and the training forward it drops
    // (a forward of a changed adapter must not meet a backward). All or nothing: refusals come before any change.

    /** Makes {@code name} active; refused while another adapter is merged. */
    void activate(String name, Merge merge, TrainingCache cache) {
        merge.refuseIfOtherMerged(require(name), "activating adapter '" + name + "'");
        cache.dropIf(!name.equals(active));
        active = name;
    }

    /** Removes {@code name}, leaving none active if it was; refused while it is merged. */
    void delete(String name, Merge merge, TrainingCache cache) {
        LoraAdapter adapter = require(name);
        merge.refuseIfMerged(adapter, "deleting");
        cache.dropIf(name.equals(active) || cache.ran(adapter), "adapter '" + name + "' was deleted");
        cache.gradientsCleared(adapter);
        adapters.remove(name);
        if (name.equals(active)) {
            active = null;
        }
    }

    /** Removes every adapter and turns adapters on again: the plain layer; the caller made sure nothing is merged. */
    void clear() {
        adapters.clear();
        active = null;
        enabled = true;
    }

    /** Sets the run-time scale of {@code name} (see {@code LoraLinear.setAdapterScale}); refused while it is merged. */
    void setScale(String name, double scale, DataType type, Merge merge, TrainingCache cache) {
        LoraAdapter adapter = require(name);
        merge.refuseIfMerged(adapter, "changing the scale of an adapter");
        double s = LoraAdapter.scaledScaling(adapter.config(), scale, type, name);
        cache.dropIf(cache.ran(adapter));
        adapter.setScale(scale, s);
    }

    /**
     * Copies {@code a}, {@code b} and, for a DoRA adapter, {@code magnitude} (null keeps it; checked: shape, type,
     * finite) into the live parameters of {@code name}.
     */
    void setWeights(String name, INDArray a, INDArray b, INDArray magnitude, DataType type, Merge merge,
                    TrainingCache cache) {
        Objects.requireNonNull(a, "a must not be null");
        Objects.requireNonNull(b, "b must not be null");
        LoraAdapter adapter = require(name);
        merge.refuseIfMerged(adapter, "setting the weights of an adapter");
        Checks.checkArray("A of adapter '" + adapter.name() + "'", a, adapter.a().shape(), type);
        Checks.checkArray("B of adapter '" + adapter.name() + "'", b, adapter.b().shape(), type);
        if (magnitude != null) {
            if (!adapter.isDora()) {
                throw new IllegalArgumentException("adapter '" + name + "' is plain LoRA and has no magnitude; "
                        + "expected magnitude = null (DoRA adapters are made with LoraConfig.useDora(true))");
            }
            Checks.checkArray("magnitude of DoRA adapter '" + name + "'", magnitude, adapter.magnitude().shape(), type);
            adapter.dora().setMagnitude(magnitude);
        }
        adapter.a().assign(a);
        adapter.b().assign(b);
        adapter.changed();
        cache.dropIf(cache.ran(adapter));
    }

    /** Turns all adapters on or off; turning them off is refused while merged (the update is inside W). */
    void enable(boolean on, Merge merge, TrainingCache cache) {
        if (!on) {
            merge.refuseWhileMerged("disabling adapters");
        }
        enabled = on;
        cache.drop();
    }

    /** Runs {@code update} on the effective adapter, if any; refused while merged (the next unmerge would be wrong). */
    void update(Consumer<LoraAdapter> update, Merge merge, TrainingCache cache) {
        Objects.requireNonNull(update, "update must not be null");
        merge.refuseWhileMerged("training");
        LoraAdapter adapter = effective();
        if (adapter != null) {
            try {
                update.accept(adapter);
            } finally {
                adapter.changed();
            }
            cache.drop();
        }
    }

    /** Runs {@code update} on adapter {@code name}; refused while merged. */
    void update(String name, Consumer<LoraAdapter> update, Merge merge, TrainingCache cache) {
        LoraAdapter adapter = require(name);
        merge.refuseWhileMerged("training");
        try {
            update.accept(adapter);
        } finally {
            adapter.changed();    // DoRA: its cached norms of W + s·B·A are stale now
        }
        cache.dropIf(cache.ran(adapter));
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

    /** Makes {@code name} active, with no checks: for a layer being built. */
    void activate(String name) {
        active = name;
    }

    boolean enabled() {
        return enabled;
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
