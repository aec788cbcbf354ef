package io.github.lora4j.serve;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.io.PeftAdapterLayout;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * The store's two reads of an adapter directory, both through {@link PeftAdapterFiles#load}, so the file is checked
 * against the model by the loader's own rules (shapes, ranks, kinds, scaling, hostile files) and nothing is
 * duplicated here. Sizing stops the read once the header is checked (no tensor is decoded, nothing is added);
 * loading adds the adapter to every LoRA module of the model, all or nothing.
 *
 * <p>On top of the loader's rules the store asks two things of an adapter: no full tensors ({@code modules_to_save},
 * trained biases: a model holds one copy per module, not one per tenant), and every LoRA module of the model covered
 * (a batch runs every row through every module).
 */
final class StoreFiles {

    /**
     * The name the sizing read passes to the loader: the read stops before anything is added, so it only has to be
     * a name the model does not hold. Registering it is refused.
     */
    static final String PROBE_NAME = "__lora4j_store_probe__";

    private StoreFiles() {
    }

    /** The files changed between sizing and loading: the adapter is sized again when next asked for. */
    static final class SizeChanged extends IllegalStateException {
        private static final long serialVersionUID = 1L;

        SizeChanged(String message) {
            super(message);
        }
    }

    /** Thrown by the layout check to stop the sizing read once the size is known; carries no stack trace. */
    private static final class Sized extends RuntimeException {
        private static final long serialVersionUID = 1L;
        final long bytes;

        Sized(long bytes) {
            super(null, null, false, false);
            this.bytes = bytes;
        }
    }

    /**
     * The resident bytes of the adapter in {@code dir}, from its config and safetensors header checked against the
     * model; no tensor is decoded and the model is not changed.
     *
     * @throws IllegalArgumentException if the adapter does not fit the model (naming the adapter)
     * @throws IOException              if a file is missing, unreadable or corrupt
     */
    static long size(LoraModel model, String name, Path dir) throws IOException {
        try {
            PeftAdapterFiles.load(dir, model.loraModules(), Map.of(), Map.of(), PROBE_NAME, layout -> {
                throw new Sized(check(model, layout));
            });
        } catch (Sized s) {
            return s.bytes;
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("adapter '" + name + "' (" + dir + ") does not fit the model: "
                    + e.getMessage().replace(PROBE_NAME, name), e);
        } catch (IOException e) {
            throw named(name, dir, e);
        }
        throw new IllegalStateException("sizing adapter '" + name + "': the loader read " + dir
                + " without showing its layout");
    }

    /**
     * Adds the adapter in {@code dir} as {@code name} to every LoRA module of the model, all or nothing; refused if
     * its size is no longer {@code expectedBytes} (the files changed since they were sized).
     */
    static void load(LoraModel model, String name, Path dir, long expectedBytes) throws IOException {
        try {
            PeftAdapterFiles.load(dir, model.loraModules(), Map.of(), Map.of(), name, layout -> {
                long bytes = check(model, layout);
                if (bytes != expectedBytes) {
                    throw new SizeChanged("adapter '" + name + "' (" + dir + ") changed on disk: it was "
                            + "sized at " + expectedBytes + " bytes, its files now hold " + bytes + "; it is sized "
                            + "again when next asked for");
                }
            });
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("adapter '" + name + "' (" + dir + ") does not fit the model: "
                    + e.getMessage(), e);
        } catch (IOException e) {
            throw named(name, dir, e);
        }
    }

    /**
     * The store's own refusals (full tensors, a LoRA module of the model not covered), then the resident bytes: per
     * module {@code (|A| + |B|)} elements of the layer's data type ({@code r·(in + out)} for a linear module).
     */
    static long check(LoraModel model, PeftAdapterLayout layout) {
        if (!layout.fullTensors().isEmpty()) {
            throw new IllegalArgumentException("it holds full tensors (modules_to_save or trained "
                    + "biases) for " + layout.fullTensors().keySet() + "; the store serves LoRA-only adapters (a "
                    + "model holds one modules_to_save copy per module, not one per adapter)");
        }
        Map<String, LoraLinear> modules = model.loraModules();
        List<String> missing = new ArrayList<>();
        for (String path : modules.keySet()) {
            if (!layout.loraModules().containsKey(path)) {
                missing.add(path);
            }
        }
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("it must cover every LoRA module of the model "
                    + modules.keySet() + " (each batch row passes through all of them); it has "
                    + new TreeSet<>(layout.loraModules().keySet()) + ", missing " + missing);
        }
        long bytes = 0;
        for (Map.Entry<String, PeftAdapterLayout.LoraModule> e : layout.loraModules().entrySet()) {
            long width = modules.get(e.getKey()).dataType().width();
            bytes = Math.addExact(bytes, Math.multiplyExact(width,
                    Math.addExact(elements(e.getValue().shapeA()), elements(e.getValue().shapeB()))));
        }
        return bytes;
    }

    /** {@code e} with the adapter's name and directory in its message, of the same kind where the kind matters. */
    static IOException named(String name, Path dir, IOException e) {
        String what = "adapter '" + name + "' (" + dir + "): ";
        if (e instanceof AdapterFormatException) {
            return new AdapterFormatException(what + e.getMessage(), e);
        }
        if (e instanceof NoSuchFileException n) {
            NoSuchFileException missing = new NoSuchFileException(n.getFile(), null, what + "file missing");
            missing.initCause(e);
            return missing;
        }
        return new IOException(what + e.getMessage(), e);
    }

    private static long elements(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }
}
