package io.github.lora4j;

import java.io.IOException;
import java.io.InputStream;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Copies of {@link ExactFloatPass} and {@link ExactDoublePass} for W narrower than one tile, one pair per width
 * class, defined as hidden classes from the very same class files, so that the JIT compiles and profiles the exact
 * pass of each width class apart from the others.
 *
 * <p>Why: C2 compiles each tile loop of a pass once, unrolling its vectorised main loop for the trip counts it
 * profiled first. After merges at 4096², the loops are unrolled for 1024-element tiles, and a 64-element row then
 * runs mostly in their scalar pre- and post-loops: a 64 × 64, r = 8 merge + unmerge pair measured 26–37 µs instead of
 * 13.7–14.0 µs on JDK 17 (25.6 against 14.4 µs on JDK 25). {@code -XX:LoopMaxUnroll} only slows the narrow case
 * further (lora-benchmarks/results/2026-12-03-side-by-side-zen4-b). Profiles belong to a class's methods, so a class
 * of its own keeps a width's loops compiled for it, whatever ran first. One copy for every narrow W is not enough:
 * shared with 768-column W, the 64 × 64 pair took 26 µs again; shared with 256 columns 15 µs, with 128 none extra.
 * Hence a copy per width class, {@code < 128}, {@code < 512} and {@code < 1024} columns; wider W uses the regular
 * classes, whose rows are whole tiles but for the last.
 *
 * <p>The copies are the same bytecode, so they compute the same bits (tests compare them with the regular classes).
 * If a class file cannot be read or defined (a runtime without class files, say), merges use the regular classes:
 * the same results, and as fast where one width class is ever merged.
 */
final class NarrowPasses {

    /** Upper column bounds (exclusive) of the width classes that get copies of their own. */
    private static final int[] BELOW = {128, 512, ExactMerge.TILE};

    private static final MethodType CONSTRUCTOR = MethodType.methodType(void.class, INDArray.class, boolean.class,
            INDArray.class, INDArray.class, double.class, boolean.class);

    /** A hidden copy of a pass class and its constructor, typed to return a {@link ExactMerge.Pass}. */
    record Copy(Class<?> type, MethodHandle constructor) {
    }

    /** {@code copies[widthClass][asDouble ? 1 : 0]}, defined on first use. Guarded by itself. */
    private static final Copy[][] COPIES = new Copy[BELOW.length][2];
    /** Set once a copy could not be defined: the regular classes are used from then on. */
    private static volatile boolean unavailable;

    private NarrowPasses() {
    }

    /** The width class of a W with {@code cols} columns, or -1 for a W that uses the regular classes. */
    static int widthClass(int cols) {
        for (int c = 0; c < BELOW.length; c++) {
            if (cols < BELOW[c]) {
                return c;
            }
        }
        return -1;
    }

    /**
     * The pass for {@code w} from its width class's copy; null for a W of whole tiles, or when the copies are
     * unavailable (then the caller uses the regular class).
     */
    static ExactMerge.Pass pass(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean fma) {
        Copy c = copy(widthClass(w.columns()), w.dataType() == DataType.DOUBLE);
        if (c == null) {
            return null;
        }
        try {
            return (ExactMerge.Pass) c.constructor().invokeExact(w, inOut, a, b, s, fma);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable e) {
            throw new IllegalStateException("internal: cannot create the narrow exact pass", e);
        }
    }

    /** Width class {@code widthClass}'s copy for FLOAT or DOUBLE W, defined if need be; null when unavailable. */
    static Copy copy(int widthClass, boolean asDouble) {
        if (widthClass < 0 || unavailable) {
            return null;
        }
        synchronized (COPIES) {
            int t = asDouble ? 1 : 0;
            if (COPIES[widthClass][t] == null) {
                Copy c = define(asDouble ? ExactDoublePass.class : ExactFloatPass.class);
                if (c == null) {
                    unavailable = true;
                    return null;
                }
                COPIES[widthClass][t] = c;
            }
            return COPIES[widthClass][t];
        }
    }

    /** A hidden class from {@code type}'s class file with its constructor, or null if it cannot be defined. */
    private static Copy define(Class<?> type) {
        try (InputStream in = type.getResourceAsStream(type.getSimpleName() + ".class")) {
            if (in == null) {
                return null;
            }
            MethodHandles.Lookup copy = MethodHandles.lookup().defineHiddenClass(in.readAllBytes(), true);
            MethodHandle c = copy.findConstructor(copy.lookupClass(), CONSTRUCTOR)
                    .asType(CONSTRUCTOR.changeReturnType(ExactMerge.Pass.class));
            return new Copy(copy.lookupClass(), c);
        } catch (IOException | ReflectiveOperationException | RuntimeException | LinkageError e) {
            return null;
        }
    }
}
