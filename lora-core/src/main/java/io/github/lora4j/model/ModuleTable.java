package io.github.lora4j.model;

import io.github.lora4j.LoraModule;
import java.util.AbstractMap;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;

/**
 * The modules of a {@link LoraModel}: one ordered table, path → {@link ModuleEntry}, in the order the builder got
 * them, plus the modules_to_save switch. Linear, embedding and conv2d modules, LoRA-targeted or not, with or without a
 * modules_to_save copy, and parameters-only counts are all rows of it; the per-kind maps the model shows
 * ({@link LoraModel#loraModules()}, ...) are live filtered views, so there is one truth to keep in step.
 */
final class ModuleTable {

    private final Map<String, ModuleEntry> rows = new LinkedHashMap<>();
    /** Whether modules_to_save copies are in use (PEFT's disabled-adapter context turns them off). */
    boolean copiesEnabled = true;

    /** Adds a row; the caller has checked the path is new. */
    void add(ModuleEntry e) {
        rows.put(e.path, e);
    }

    /** Whether any row, computed or parameters-only, has {@code path}. */
    boolean contains(String path) {
        return rows.containsKey(path);
    }

    /** {@return a table of new rows over the same layers} (a builder may build several models.) */
    ModuleTable copy() {
        ModuleTable t = new ModuleTable();
        rows.values().forEach(e -> t.add(e.copyOf()));
        t.copiesEnabled = copiesEnabled;
        return t;
    }

    /** {@return the computed module at {@code path}, or null for an unknown path or a parameters-only one} */
    ModuleEntry get(String path) {
        ModuleEntry e = rows.get(path);
        return e != null && e.computed() ? e : null;
    }

    /** {@return the computed modules (not parameters-only ones), in model order; a new list} */
    List<ModuleEntry> computed() {
        return rows.values().stream().filter(ModuleEntry::computed).toList();
    }

    /** {@return the LoRA-carrying modules, in model order; a new list} */
    List<ModuleEntry> targeted() {
        return rows.values().stream().filter(e -> e.targeted).toList();
    }

    /** {@return the modules with a modules_to_save copy, in model order; a new list} */
    List<ModuleEntry> withCopies() {
        return rows.values().stream().filter(e -> e.copy != null).toList();
    }

    /** {@return the computed modules' paths in model order; a new list} */
    List<String> paths() {
        return computed().stream().map(e -> e.path).toList();
    }

    /** {@return the targeted modules' paths in model order; a new list} */
    List<String> targetedPaths() {
        return targeted().stream().map(e -> e.path).toList();
    }

    /** Whether no module carries LoRA. */
    boolean noneTargeted() {
        return rows.values().stream().noneMatch(e -> e.targeted);
    }

    /** Refuses a model without LoRA. */
    void requireApplied() {
        if (noneTargeted()) {
            throw new IllegalStateException("no LoRA applied yet; call applyLora(config, targetModules) first");
        }
    }

    /** {@return the layer in use at {@code e}: its modules_to_save copy while copies are enabled, else its module} */
    LoraModule live(ModuleEntry e) {
        return e.live(copiesEnabled);
    }

    /** {@return every layer the model holds (modules, and the copies and originals swapped out), in model order} */
    List<LoraModule> allLayers() {
        List<LoraModule> out = new ArrayList<>();
        for (ModuleEntry e : computed()) {
            out.add(e.module);
            if (e.copy != null) {
                out.add(e.copy);
            }
        }
        return out;
    }

    /** {@return path → live layer of {@code type}, all of them or the targeted ones; a new map in model order} */
    <T extends LoraModule> Map<String, T> layers(Class<T> type, boolean targetedOnly) {
        return snapshot(picker(type, targetedOnly));
    }

    /** {@return a live, unmodifiable view: path → layer of {@code type}, the targeted ones only, in model order} */
    <T extends LoraModule> Map<String, T> targetedView(Class<T> type) {
        return new View<>(picker(type, true));
    }

    /** {@return a live, unmodifiable view: path → count of each parameters-only module, in order} */
    Map<String, Long> parametersOnlyView() {
        return new View<>(e -> e.computed() ? null : e.parametersOnly);
    }

    private <T extends LoraModule> Function<ModuleEntry, T> picker(Class<T> type, boolean targetedOnly) {
        return e -> {
            if (!e.computed() || targetedOnly && !e.targeted) {
                return null;
            }
            LoraModule m = live(e);
            return type.isInstance(m) ? type.cast(m) : null;
        };
    }

    private <V> Map<String, V> snapshot(Function<ModuleEntry, V> pick) {
        Map<String, V> out = new LinkedHashMap<>();
        for (ModuleEntry e : rows.values()) {
            V v = pick.apply(e);
            if (v != null) {
                out.put(e.path, v);
            }
        }
        return out;
    }

    /** A filtered view of the table, read through on every call: it follows later changes of the model. */
    private final class View<V> extends AbstractMap<String, V> {
        private final Function<ModuleEntry, V> pick;

        View(Function<ModuleEntry, V> pick) {
            this.pick = pick;
        }

        @Override
        public Set<Entry<String, V>> entrySet() {
            return Collections.unmodifiableMap(snapshot(pick)).entrySet();
        }

        @Override
        public V get(Object key) {
            ModuleEntry e = rows.get(key);
            return e == null ? null : pick.apply(e);
        }

        @Override
        public boolean containsKey(Object key) {
            return get(key) != null;
        }
    }
}
